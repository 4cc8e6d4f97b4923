//! The four ways of reading one ~200-byte JSON item, each as a cache-aside function of `id`
//! whose body builds the item (and counts its runs).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use cached::{ConcurrentCachedAsync, stores::AsyncRedisCache};
use cached_runtime::{Cache, redis_cache};
use redis::{AsyncCommands, aio::MultiplexedConnection};
use serde::{Deserialize, Serialize};
use tests::RedisServer;

/// The id every hit-path call reads (filled before measuring).
pub(crate) const HOT_ID: u64 = 42;
pub(crate) const TTL_SECS: u64 = 3600;

/// About 200 bytes of JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Item {
    id: u64,
    name: String,
    category: String,
    price_cents: u64,
    tags: Vec<String>,
    description: String,
}

impl Item {
    /// The item of `id` at another price: a new value for the same key.
    pub(crate) fn priced(id: u64, price_cents: u64) -> Self {
        Self {
            price_cents,
            ..item(id)
        }
    }

    pub(crate) fn price_cents(&self) -> u64 {
        self.price_cents
    }
}

static BODY_RUNS: AtomicU64 = AtomicU64::new(0);

/// The "database read": builds the item and counts the run.
pub(crate) async fn load(id: u64) -> Item {
    BODY_RUNS.fetch_add(1, Ordering::Relaxed);
    item(id)
}

fn item(id: u64) -> Item {
    Item {
        id,
        name: "Stainless steel kettle".into(),
        category: "kitchen".into(),
        price_cents: 3499,
        tags: vec!["steel".into(), "1.7l".into(), "electric".into()],
        description: "Boils water fast; auto shut-off; cordless base that turns all the way".into(),
    }
}

/// Variant 2: the function as a user writes it.
#[redis_cache(prefix = "item", ttl = 3600, skip(cache), cache = cache)]
pub(crate) async fn item_ours(cache: &Cache, id: u64) -> Item {
    load(id).await
}

/// Variant 3: what `cached`'s `#[io_cached]` does with an `AsyncRedisCache`: get, else run
/// the body and set a clone.
async fn item_peer(cache: &AsyncRedisCache<u64, Item>, id: u64) -> Item {
    if let Ok(Some(v)) = cache.async_cache_get(&id).await {
        return v;
    }
    let v = load(id).await;
    let _ = cache.async_cache_set(id, v.clone()).await;
    v
}

/// Variants 1 and 4: `GET` + `serde_json`, else the body and `SET EX` of its JSON.
pub(crate) async fn item_hand<C: AsyncCommands>(conn: &mut C, id: u64) -> Item {
    let key = format!("hand:{id}");
    let got: Option<Vec<u8>> = conn.get(&key).await.expect("GET");
    if let Some(bytes) = got {
        return serde_json::from_slice(&bytes).expect("the stored JSON decodes");
    }
    let v = load(id).await;
    let bytes = serde_json::to_vec(&v).expect("an Item encodes");
    let _: () = conn.set_ex(&key, bytes, TTL_SECS).await.expect("SET EX");
    v
}

/// The clients of every variant, on one server.
pub(crate) struct Variants {
    conn: MultiplexedConnection,
    cache: Cache,
    peer: AsyncRedisCache<u64, Item>,
    pool: bb8::Pool<bb8_redis::RedisConnectionManager>,
    next_cold: AtomicU64,
    miss_calls: AtomicU64,
}

impl Variants {
    /// Connects every client and warms `HOT_ID` in each variant's keyspace.
    pub(crate) async fn new(server: &RedisServer) -> Self {
        let client = redis::Client::open(server.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let cache = Cache::builder(server.url()).build().await.expect("cache");
        let peer = AsyncRedisCache::<u64, Item>::builder("item")
            .namespace("peer")
            .ttl(Duration::from_secs(TTL_SECS))
            .connection_string(&server.url())
            .build()
            .await
            .expect("cached AsyncRedisCache");
        let pool = bb8::Pool::builder()
            .build(bb8_redis::RedisConnectionManager::new(server.url()).expect("url"))
            .await
            .expect("bb8 pool");
        // redis-benchmark's GET key, holding a 200-byte value.
        let _: () = conn
            .set("key:__rand_int__", vec![b'x'; 200])
            .await
            .expect("SET");
        item_hand(&mut conn, HOT_ID).await;
        item_ours(&cache, HOT_ID).await;
        item_peer(&peer, HOT_ID).await;
        BODY_RUNS.store(0, Ordering::Relaxed);
        Self {
            conn,
            cache,
            peer,
            pool,
            next_cold: AtomicU64::new(1_000_000),
            miss_calls: AtomicU64::new(0),
        }
    }

    /// Bytes stored for the hot item by variants 1, 2 and 3.
    pub(crate) async fn stored_sizes(&self) -> [usize; 3] {
        let mut conn = self.conn.clone();
        let mut sizes = [0; 3];
        let keys = [
            format!("hand:{HOT_ID}"),
            self.cache
                .key("item")
                .arg(&HOT_ID)
                .build()
                .expect("a valid key")
                .as_str()
                .to_owned(),
            format!("peer:item:{HOT_ID}"),
        ];
        for (size, key) in sizes.iter_mut().zip(keys) {
            *size = conn.strlen(&key).await.unwrap_or(0);
        }
        sizes
    }

    pub(crate) async fn hand_hit(&self) {
        std::hint::black_box(item_hand(&mut self.conn.clone(), HOT_ID).await);
    }

    pub(crate) async fn ours_hit(&self) {
        std::hint::black_box(item_ours(&self.cache, HOT_ID).await);
    }

    pub(crate) async fn peer_hit(&self) {
        std::hint::black_box(item_peer(&self.peer, HOT_ID).await);
    }

    pub(crate) async fn bb8_hit(&self) {
        let mut conn = self.pool.get().await.expect("checkout");
        std::hint::black_box(item_hand(&mut *conn, HOT_ID).await);
    }

    fn cold_id(&self) -> u64 {
        self.miss_calls.fetch_add(1, Ordering::Relaxed);
        self.next_cold.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn hand_miss(&self) {
        let id = self.cold_id();
        std::hint::black_box(item_hand(&mut self.conn.clone(), id).await);
    }

    pub(crate) async fn ours_miss(&self) {
        let id = self.cold_id();
        std::hint::black_box(item_ours(&self.cache, id).await);
    }

    pub(crate) async fn peer_miss(&self) {
        let id = self.cold_id();
        std::hint::black_box(item_peer(&self.peer, id).await);
    }

    /// Body runs since the warm-up.
    pub(crate) fn body_runs(&self) -> u64 {
        BODY_RUNS.load(Ordering::Relaxed)
    }

    /// Miss-path calls made.
    pub(crate) fn miss_calls(&self) -> u64 {
        self.miss_calls.load(Ordering::Relaxed)
    }
}
