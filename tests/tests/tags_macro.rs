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

topology_suite!(standalone, cluster;
    a_writer_drops_two_functions_by_one_tag_and_keeps_the_others,
);
