//! `#[redis_cache(tags = [...])]` against real Redis, one server and a cluster: two functions
//! whose entries share a tag are dropped together by a writer's `invalidate_tags` or by a
//! function's `{name}_invalidate_tags` companion, and kept by the other tags.

#![deny(warnings, clippy::all)]

use std::sync::atomic::{AtomicUsize, Ordering};

use cached_runtime::{Cache, redis_cache};
use serde::Serialize;
use tests::{topology::TestRedis, topology_suite};

#[derive(Default)]
struct Runs(AtomicUsize);

impl Runs {
    fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[derive(Clone, Debug, Serialize)]
struct User {
    id: u64,
    name: String,
}

#[redis_cache(
    prefix = "tm.page",
    ttl = 600,
    cache = cache,
    skip(cache, runs),
    tags = ["category:{category}", "user:{user.id}"]
)]
async fn page(cache: &Cache, runs: &Runs, category: &str, user: &User, page: u32) -> Vec<String> {
    let run = runs.hit();
    vec![format!("{category}/{}/{page}/{run}", user.name)]
}

#[redis_cache(
    prefix = "tm.item",
    ttl = 600,
    cache = cache,
    skip(cache, runs),
    tags = ["category:{category}", "item:{id}"]
)]
async fn item(cache: &Cache, runs: &Runs, category: String, id: u64) -> String {
    format!("{category}/{id}/{}", runs.hit())
}

async fn a_writer_drops_two_functions_by_one_tag_and_keeps_the_others(redis: TestRedis) {
    let cache = redis
        .cache_builder()
        .namespace("tm:")
        .build()
        .await
        .expect("connect");
    let runs = Runs::default();
    let ann = User {
        id: 7,
        name: "ann".to_owned(),
    };
    let p = page(&cache, &runs, "books", &ann, 1).await;
    let i = item(&cache, &runs, "books".to_owned(), 3).await;
    let g = item(&cache, &runs, "garden".to_owned(), 4).await;
    assert_eq!(runs.0.load(Ordering::SeqCst), 3);
    assert_eq!(page(&cache, &runs, "books", &ann, 1).await, p);
    assert_eq!(item(&cache, &runs, "books".to_owned(), 3).await, i);

    // The companion drops what shares a tag with item 3: the page (category) and item 3.
    assert_eq!(
        item_invalidate_tags(&cache, &"books".to_owned(), &3)
            .await
            .expect("invalidate"),
        2
    );
    assert_ne!(page(&cache, &runs, "books", &ann, 1).await, p);
    assert_ne!(item(&cache, &runs, "books".to_owned(), 3).await, i);
    assert_eq!(item(&cache, &runs, "garden".to_owned(), 4).await, g);

    // A writer that knows only the user: the template's text with the encoded id.
    let p = page(&cache, &runs, "books", &ann, 1).await;
    let i = item(&cache, &runs, "books".to_owned(), 3).await;
    let tag = cache
        .tag()
        .literal("user:")
        .value(&ann.id)
        .build()
        .expect("a tag");
    assert_eq!(tag, "user:7");
    cache.invalidate_tags([tag]).await.expect("invalidate");
    assert_ne!(page(&cache, &runs, "books", &ann, 1).await, p);
    assert_eq!(item(&cache, &runs, "books".to_owned(), 3).await, i);
    assert_eq!(item(&cache, &runs, "garden".to_owned(), 4).await, g);
}

/// A revalidating response: its entry is served as stored, validator included.
#[redis_cache(
    prefix = "tm.direct",
    ttl = 60,
    cache = cache,
    skip(cache),
    revalidate,
    tags = ["item:{id}"]
)]
async fn direct(cache: &Cache, id: u64) -> axum::Json<u64> {
    axum::Json(id)
}

#[tokio::test]
async fn a_tagged_revalidating_response_is_served_with_its_etag_until_its_tag_goes() {
    let redis = tests::RedisServer::start();
    let cache = redis.cache().await;
    let conditional = cached_runtime::http::Conditional::default();
    let miss = direct(conditional.clone(), &cache, 7).await;
    assert!(!miss.is_hit());
    let hit = direct(conditional.clone(), &cache, 7).await;
    assert!(hit.is_hit());
    assert_eq!(hit.json(), Some(&b"7"[..]));
    assert_eq!(hit.etag(), miss.etag());
    assert!(hit.etag().is_some());
    assert_eq!(
        direct_invalidate_tags(&cache, &7)
            .await
            .expect("invalidate"),
        1
    );
    let again = direct(conditional, &cache, 7).await;
    assert!(!again.is_hit(), "the tag's invalidation dropped it");
    assert_eq!(again.etag(), miss.etag(), "the same value, the same tag");
}

topology_suite!(standalone, cluster;
    a_writer_drops_two_functions_by_one_tag_and_keeps_the_others,
);
