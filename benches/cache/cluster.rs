//! The hit and miss paths on a local Redis Cluster beside a single server, in one run:
//! `#[redis_cache]` on each, and the hand-written `GET` + decode (or `GET` + `SET EX`) on
//! redis-rs's own cluster connection as the cluster's ceiling.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use cached_runtime::Cache;
use redis::cluster_async::ClusterConnection;
use tests::{RedisServer, topology::LocalCluster};

use crate::{
    HIT_OPS, MISS_OPS,
    harness::{CONCURRENCY, bench},
    variants::{HOT_ID, item_hand, item_ours},
};

struct Clients {
    single: Cache,
    cluster: Cache,
    hand: ClusterConnection,
    next_cold: AtomicU64,
}

impl Clients {
    fn cold(&self) -> u64 {
        self.next_cold.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) async fn run() {
    let server = RedisServer::start();
    let cluster = LocalCluster::start();
    let hand = redis::cluster::ClusterClient::new(cluster.seeds())
        .expect("seeds")
        .get_async_connection()
        .await
        .expect("cluster connection");
    let clients = Arc::new(Clients {
        single: Cache::builder(server.url()).build().await.expect("cache"),
        cluster: Cache::cluster(cluster.seeds())
            .build()
            .await
            .expect("cluster cache"),
        hand,
        next_cold: AtomicU64::new(1_000_000),
    });
    item_ours(&clients.single, HOT_ID).await;
    item_ours(&clients.cluster, HOT_ID).await;
    item_hand(&mut clients.hand.clone(), HOT_ID).await;

    let mut hits = Vec::new();
    let mut misses = Vec::new();
    println!("\n## Cluster beside a single server\n");
    for &c in &CONCURRENCY {
        let h = Arc::clone(&clients);
        let single = bench("single: #[redis_cache] hit", c, HIT_OPS, move || {
            let h = Arc::clone(&h);
            async move {
                std::hint::black_box(item_ours(&h.single, HOT_ID).await);
            }
        })
        .await;
        let h = Arc::clone(&clients);
        let hand = bench("cluster: GET + decode by hand", c, HIT_OPS, move || {
            let h = Arc::clone(&h);
            async move {
                std::hint::black_box(item_hand(&mut h.hand.clone(), HOT_ID).await);
            }
        })
        .await;
        let h = Arc::clone(&clients);
        let ours = bench("cluster: #[redis_cache] hit", c, HIT_OPS, move || {
            let h = Arc::clone(&h);
            async move {
                std::hint::black_box(item_ours(&h.cluster, HOT_ID).await);
            }
        })
        .await;
        hits.push((c, single, hand, ours));

        let h = Arc::clone(&clients);
        let single = bench("single: #[redis_cache] miss", c, MISS_OPS, move || {
            let h = Arc::clone(&h);
            async move {
                std::hint::black_box(item_ours(&h.single, h.cold()).await);
            }
        })
        .await;
        let h = Arc::clone(&clients);
        let hand = bench("cluster: GET + SET EX by hand", c, MISS_OPS, move || {
            let h = Arc::clone(&h);
            async move {
                std::hint::black_box(item_hand(&mut h.hand.clone(), h.cold()).await);
            }
        })
        .await;
        let h = Arc::clone(&clients);
        let ours = bench("cluster: #[redis_cache] miss", c, MISS_OPS, move || {
            let h = Arc::clone(&h);
            async move {
                std::hint::black_box(item_ours(&h.cluster, h.cold()).await);
            }
        })
        .await;
        misses.push((c, single, hand, ours));
    }
    for (title, rows) in [("Hit path", &hits), ("Miss path", &misses)] {
        println!("\n### {title} on a 3-primary cluster, ops/s (p50 / p99 µs)\n");
        println!(
            "| callers | single server `#[redis_cache]` | cluster by hand | cluster `#[redis_cache]` | ours/hand on the cluster | cluster/single |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        for (c, single, hand, ours) in rows {
            println!(
                "| {c} | {} | {} | {} | {:.2} | {:.2} |",
                single.cell(),
                hand.cell(),
                ours.cell(),
                ours.ops_per_sec / hand.ops_per_sec,
                ours.ops_per_sec / single.ops_per_sec,
            );
        }
    }
}
