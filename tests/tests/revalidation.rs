//! HTTP revalidation served from the cache, over real HTTP for Actix and axum against a real
//! redis-server: `200` with an `ETag` on a miss and on a hit, `304` without a body for a
//! matching `If-None-Match`, a new tag after an update and an invalidation, a refresh for
//! `Cache-Control: no-cache`, `X-Cache` on every answer, and one tag for one stored value in
//! every process.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, redis_cache};
use reqwest::{StatusCode, header};
use tests::{
    RedisServer,
    fixtures::{Item, policy},
    wait_until,
};

/// What a handler reads: items, and how often the handler body ran.
#[derive(Clone)]
struct Catalog {
    cache: Cache,
    items: Arc<Mutex<HashMap<u64, Item>>>,
    runs: Arc<AtomicUsize>,
}

impl Catalog {
    fn new(cache: Cache) -> Self {
        let items = (1..=3)
            .map(|id| {
                let name = format!("item {id}");
                (id, Item { id, name })
            })
            .collect();
        Self {
            cache,
            items: Arc::new(Mutex::new(items)),
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn read(&self, id: u64) -> Option<Item> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.items.lock().expect("not poisoned").get(&id).cloned()
    }

    fn rename(&self, id: u64, name: &str) {
        let mut items = self.items.lock().expect("not poisoned");
        items.insert(
            id,
            Item {
                id,
                name: name.to_owned(),
            },
        );
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

mod actix_app {
    use actix_web::{App, HttpServer, get, web};
    use cached_runtime::redis_cache;

    use super::{Catalog, Item, SocketAddr};

    #[redis_cache(prefix = "rv.actix", ttl = 600, skip(state), cache = state.cache, revalidate)]
    #[get("/items/{id}")]
    async fn item(
        state: web::Data<Catalog>,
        id: web::Path<u64>,
    ) -> Result<Option<web::Json<Item>>, actix_web::Error> {
        Ok(state.read(*id).map(web::Json))
    }

    pub(super) async fn invalidate(catalog: &Catalog, id: u64) {
        item_invalidate(&catalog.cache, &id).await.expect("UNLINK");
    }

    pub(super) fn start(catalog: Catalog) -> SocketAddr {
        let data = web::Data::new(catalog);
        let server = HttpServer::new(move || App::new().app_data(data.clone()).service(item))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .expect("bind a free port");
        let addr = server.addrs()[0];
        tokio::spawn(server.run());
        addr
    }
}

mod axum_app {
    use axum::{
        Json, Router,
        extract::{Path, State},
        http::StatusCode,
        routing::get,
    };
    use cached_runtime::redis_cache;
    use tests::fixtures::serve;

    use super::{Catalog, Item, SocketAddr};

    #[redis_cache(prefix = "rv.axum", ttl = 600, skip(catalog), cache = catalog.cache, revalidate)]
    async fn item(
        State(catalog): State<Catalog>,
        Path(id): Path<u64>,
    ) -> Result<Json<Item>, StatusCode> {
        catalog.read(id).map(Json).ok_or(StatusCode::NOT_FOUND)
    }

    pub(super) async fn invalidate(catalog: &Catalog, id: u64) {
        item_invalidate(&catalog.cache, &id).await.expect("UNLINK");
    }

    pub(super) async fn start(catalog: Catalog) -> SocketAddr {
        let app = Router::new()
            .route("/items/{id}", get(item))
            .with_state(catalog);
        serve(app).await
    }
}

#[derive(Clone, Copy, Debug)]
enum Framework {
    Actix,
    Axum,
}

/// A server of one framework over its own catalog, on a shared cache.
struct Served {
    framework: Framework,
    catalog: Catalog,
    base: String,
    client: reqwest::Client,
}

/// One answer: status, the headers the cache sets, and the body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    cache_control: Option<String>,
    x_cache: Option<String>,
    body: String,
}

impl Served {
    async fn start(framework: Framework, cache: Cache) -> Self {
        let catalog = Catalog::new(cache);
        let addr = match framework {
            Framework::Actix => actix_app::start(catalog.clone()),
            Framework::Axum => axum_app::start(catalog.clone()).await,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an http client");
        Self {
            framework,
            catalog,
            base: format!("http://{addr}"),
            client,
        }
    }

    async fn get(&self, id: u64, headers: &[(header::HeaderName, &str)]) -> Answer {
        let mut request = self.client.get(format!("{}/items/{id}", self.base));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            status: response.status(),
            etag: header("etag"),
            cache_control: header("cache-control"),
            x_cache: header("x-cache"),
            body: response.text().await.expect("a body"),
        }
    }

    async fn invalidate(&self, id: u64) {
        match self.framework {
            Framework::Actix => actix_app::invalidate(&self.catalog, id).await,
            Framework::Axum => axum_app::invalidate(&self.catalog, id).await,
        }
    }
}

const BOTH: [Framework; 2] = [Framework::Actix, Framework::Axum];

fn max_age(answer: &Answer) -> u64 {
    let value = answer.cache_control.as_deref().expect("a Cache-Control");
    let seconds = value
        .strip_prefix("private, max-age=")
        .unwrap_or_else(|| panic!("private with a max-age: {value}"));
    seconds.parse().expect("seconds")
}

#[tokio::test]
async fn a_miss_and_a_hit_answer_200_with_one_etag_and_the_stored_json() {
    let redis = RedisServer::start();
    for framework in BOTH {
        let served = Served::start(framework, redis.cache().await).await;
        let miss = served.get(1, &[]).await;
        assert_eq!(miss.status, StatusCode::OK, "{framework:?}: {miss:?}");
        assert_eq!(miss.x_cache.as_deref(), Some("MISS"), "{framework:?}");
        let etag = miss.etag.clone().expect("an ETag");
        assert!(etag.len() == 34 && etag.starts_with('"'), "{etag}");
        assert!((590..=600).contains(&max_age(&miss)), "{miss:?}");
        assert_eq!(miss.body, r#"{"id":1,"name":"item 1"}"#);

        let hit = served.get(1, &[]).await;
        assert_eq!(hit.status, StatusCode::OK, "{framework:?}");
        assert_eq!(hit.x_cache.as_deref(), Some("HIT"), "{framework:?}");
        assert_eq!(hit.etag.as_deref(), Some(etag.as_str()));
        assert_eq!(hit.body, miss.body);
        assert!(max_age(&hit) <= max_age(&miss));
        assert_eq!(
            served.catalog.runs(),
            1,
            "{framework:?}: the hit ran nothing"
        );
    }
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_without_a_body_or_a_run() {
    let redis = RedisServer::start();
    for framework in BOTH {
        let served = Served::start(framework, redis.cache().await).await;
        let first = served.get(2, &[]).await;
        let etag = first.etag.expect("an ETag");
        for tag in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
            let again = served.get(2, &[(header::IF_NONE_MATCH, &tag)]).await;
            assert_eq!(
                again.status,
                StatusCode::NOT_MODIFIED,
                "{framework:?} {tag}"
            );
            assert_eq!(again.body, "");
            assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
            assert_eq!(again.x_cache.as_deref(), Some("HIT"));
            assert!(max_age(&again) > 0);
        }
        let other = served.get(2, &[(header::IF_NONE_MATCH, "\"stale\"")]).await;
        assert_eq!(other.status, StatusCode::OK, "{framework:?}");
        assert_eq!(served.catalog.runs(), 1, "{framework:?}");
    }
}

#[tokio::test]
async fn an_update_and_an_invalidation_give_a_new_etag() {
    let redis = RedisServer::start();
    for framework in BOTH {
        let served = Served::start(framework, redis.cache().await).await;
        let before = served.get(3, &[]).await;
        let old = before.etag.expect("an ETag");
        served.catalog.rename(3, "renamed");
        served.invalidate(3).await;
        let after = served.get(3, &[(header::IF_NONE_MATCH, &old)]).await;
        assert_eq!(after.status, StatusCode::OK, "{framework:?}");
        assert_eq!(after.x_cache.as_deref(), Some("MISS"));
        assert_eq!(after.body, r#"{"id":3,"name":"renamed"}"#);
        let new = after.etag.expect("an ETag");
        assert_ne!(new, old, "{framework:?}");
        let revalidated = served.get(3, &[(header::IF_NONE_MATCH, &new)]).await;
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test]
async fn no_cache_on_the_request_recomputes_and_replaces_the_entry() {
    let redis = RedisServer::start();
    for framework in BOTH {
        let served = Served::start(framework, redis.cache().await).await;
        let first = served.get(1, &[]).await;
        // Changed behind the cache's back: a plain read still gets the stored value.
        served.catalog.rename(1, "fresh");
        let stale = served.get(1, &[]).await;
        assert_eq!(stale.etag, first.etag);
        assert_eq!(stale.x_cache.as_deref(), Some("HIT"));

        let refreshed = served.get(1, &[(header::CACHE_CONTROL, "no-cache")]).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{framework:?}");
        assert_eq!(refreshed.x_cache.as_deref(), Some("MISS"));
        assert_eq!(refreshed.body, r#"{"id":1,"name":"fresh"}"#);
        assert_ne!(refreshed.etag, first.etag);
        assert_eq!(served.catalog.runs(), 2);

        let after = served.get(1, &[]).await;
        assert_eq!(
            after.x_cache.as_deref(),
            Some("HIT"),
            "the entry was replaced"
        );
        assert_eq!(after.etag, refreshed.etag);
        assert_eq!(served.catalog.runs(), 2);
    }
}

#[tokio::test]
async fn an_absent_item_is_the_handlers_own_answer_with_no_etag() {
    let redis = RedisServer::start();
    for framework in BOTH {
        let served = Served::start(framework, redis.cache().await).await;
        let missing = served.get(404, &[]).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{framework:?}");
        assert_eq!(missing.etag, None);
        assert_eq!(missing.x_cache.as_deref(), Some("MISS"));
    }
}

#[tokio::test]
async fn every_process_serves_one_etag_for_one_stored_value() {
    let redis = RedisServer::start();
    for framework in BOTH {
        // Two instances with their own caches and connections, as two processes would be.
        let one = Served::start(framework, redis.cache().await).await;
        let two = Served::start(framework, redis.cache().await).await;
        let filled = one.get(2, &[]).await;
        let read = two.get(2, &[]).await;
        assert_eq!(read.x_cache.as_deref(), Some("HIT"), "{framework:?}");
        assert_eq!(read.etag, filled.etag);
        let revalidated = two
            .get(
                2,
                &[(
                    header::IF_NONE_MATCH,
                    filled.etag.as_deref().expect("an ETag"),
                )],
            )
            .await;
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
        // Refilled by the other instance, the same value gets the same tag.
        two.invalidate(2).await;
        let refilled = two.get(2, &[]).await;
        assert_eq!(refilled.x_cache.as_deref(), Some("MISS"));
        assert_eq!(refilled.etag, filled.etag, "{framework:?}");
    }
}

/// Not a handler: the attribute's response type, called directly.
#[redis_cache(prefix = "rv.direct", ttl = 60, cache = cache, skip(cache), revalidate = "no-cache")]
async fn direct(cache: &Cache, id: u64) -> axum::Json<u64> {
    axum::Json(id)
}

#[tokio::test]
async fn a_configured_policy_replaces_the_default_cache_control() {
    let redis = RedisServer::start();
    let cache = redis.cache().await;
    let conditional = cached_runtime::http::Conditional::default();
    let miss = direct(conditional.clone(), &cache, 7).await;
    assert!(!miss.is_hit());
    let hit = direct(conditional, &cache, 7).await;
    assert!(hit.is_hit());
    assert_eq!(hit.json(), Some(&b"7"[..]));
    let headers: Vec<(&str, String)> = hit.headers().collect();
    assert!(
        headers.contains(&("cache-control", "no-cache".to_owned())),
        "{headers:?}"
    );
    assert!(headers.contains(&("x-cache", "HIT".to_owned())));
}

#[tokio::test]
async fn a_value_stored_without_a_validator_is_served_with_the_tag_of_its_json() {
    let redis = RedisServer::start();
    let served = Served::start(Framework::Axum, redis.cache().await).await;
    // As `Cache::set` writes it, or a binary without `revalidate`.
    let policy = policy("rv.axum");
    let key = served
        .catalog
        .cache
        .key("rv.axum")
        .arg(&1u64)
        .build()
        .expect("a key");
    let item = Item {
        id: 1,
        name: "written".to_owned(),
    };
    served
        .catalog
        .cache
        .set(&key, &item, &policy)
        .await
        .expect("SET");
    let answer = served.get(1, &[]).await;
    assert_eq!(answer.x_cache.as_deref(), Some("HIT"));
    assert_eq!(answer.body, r#"{"id":1,"name":"written"}"#);
    assert_eq!(
        answer.cache_control.as_deref(),
        Some("private, max-age=0"),
        "its expiry is unknown"
    );
    assert_eq!(served.catalog.runs(), 0);

    // The tag is the one a fill of the same value stores.
    served.catalog.rename(1, "written");
    served.invalidate(1).await;
    let filled = served.get(1, &[]).await;
    assert_eq!(filled.x_cache.as_deref(), Some("MISS"));
    assert_eq!(filled.etag, answer.etag);
}

#[tokio::test]
async fn an_unusable_entry_is_a_counted_miss_and_is_rewritten() {
    let redis = RedisServer::start();
    let served = Served::start(Framework::Axum, redis.cache().await).await;
    let _: () = redis::Commands::set(&mut redis.conn(), "rv.axum:1", "not ours").expect("SET");
    let answer = served.get(1, &[]).await;
    assert_eq!(answer.x_cache.as_deref(), Some("MISS"));
    assert_eq!(answer.body, r#"{"id":1,"name":"item 1"}"#);
    let counts = served.catalog.cache.stats().total;
    assert_eq!(
        (counts.decode_failures, counts.misses),
        (1, 1),
        "{counts:?}"
    );
    assert_eq!(served.get(1, &[]).await.x_cache.as_deref(), Some("HIT"));
}

static STUCK_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `stuck`, the body starts and never finishes: a leader to cancel.
#[redis_cache(prefix = "rv.cancel", ttl = 60, cache = cache, skip(cache, stuck), revalidate)]
async fn gated(cache: &Cache, stuck: bool, id: u64) -> axum::Json<u64> {
    if stuck {
        STUCK_STARTED.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    axum::Json(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidating_call_dropped_mid_fill_leaves_the_key_to_the_next_caller() {
    let redis = RedisServer::start();
    let cache = redis.cache().await;
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            gated(
                cached_runtime::http::Conditional::default(),
                &cache,
                true,
                5,
            )
            .await
        })
    };
    // The leader's body has started.
    wait_until(Duration::from_secs(15), || {
        STUCK_STARTED.load(Ordering::SeqCst)
    })
    .await;
    leader.abort();
    assert!(leader.await.is_err_and(|e| e.is_cancelled()));

    let next = tokio::time::timeout(
        Duration::from_secs(15),
        gated(
            cached_runtime::http::Conditional::default(),
            &cache,
            false,
            5,
        ),
    )
    .await
    .expect("not blocked by the dropped leader");
    assert!(!next.is_hit());
    assert_eq!(
        next.json(),
        Some(&b"5"[..]),
        "a miss answers with its stored form"
    );
    assert!(next.etag().is_some());
    let hit = gated(
        cached_runtime::http::Conditional::default(),
        &cache,
        false,
        5,
    )
    .await;
    assert!(hit.is_hit());
    assert_eq!(hit.json(), Some(&b"5"[..]));
    assert_eq!(cache.stats().waiting, 0);
}
