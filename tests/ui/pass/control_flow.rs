//! `?` and `return` in the body work as in the function they were written in.

use cached_runtime::redis_cache;

#[derive(Debug)]
struct Error;

impl From<std::num::ParseIntError> for Error {
    fn from(_: std::num::ParseIntError) -> Self {
        Error
    }
}

#[redis_cache(prefix = "parse", ttl = 60)]
async fn parse(text: String) -> Result<u64, Error> {
    if text.is_empty() {
        return Err(Error);
    }
    let n: u64 = text.parse()?;
    Ok(n * 2)
}

#[redis_cache(prefix = "first", ttl = 60)]
async fn first(items: Vec<u64>) -> Option<u64> {
    let first = items.first()?;
    for item in &items {
        if *item > 10 {
            return Some(*item);
        }
    }
    Some(*first)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        assert_eq!(parse("21".to_owned()).await.ok(), Some(42));
        assert!(parse("x".to_owned()).await.is_err());
        assert!(parse(String::new()).await.is_err());
        assert_eq!(first(vec![1, 20]).await, Some(20));
        assert_eq!(first(vec![]).await, None);
    });
}
