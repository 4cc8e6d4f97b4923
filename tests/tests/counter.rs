//! Counters and rankings against real servers, one server and the cluster: concurrent
//! increments lose nothing, batched ones arrive once, a batching counter that dies loses at
//! most its documented bound, and rankings answer top, rank and neighbours.

use std::{sync::Arc, time::Duration};

use cached_runtime::counter::{Counter, Ranking};
use redis::Commands;
use tests::{deployment::Deployment, deployment_suite, topology::Topology, wait_until_async};

/// 64 callers on 4 connections, 100 increments each over 8 ids, unbatched: every id ends at
/// its exact total, and each returned value is seen once (every `INCRBY` was atomic).
async fn concurrent_increments_lose_nothing(d: Deployment) {
    let mut counters = Vec::new();
    for _ in 0..4 {
        counters.push(
            Counter::on(&d.redis().await, "hits")
                .build()
                .expect("valid"),
        );
    }
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let counter = counters[i % 4].clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0..100 {
                    let id = format!("id{}", (i + n) % 8);
                    seen.push((id.clone(), counter.incr(&id, 1).await.expect("INCRBY")));
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for caller in callers {
        seen.extend(caller.await.expect("a caller panicked"));
    }
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "two increments returned the same value");
    let mut conn = d.conn();
    for id in 0..8 {
        let key = counters[0].key(&format!("id{id}"));
        let value: i64 = conn.get(&key).expect("GET");
        assert_eq!(value, 800, "{key}");
        assert_eq!(counters[1].get(&format!("id{id}")).await.expect("GET"), 800);
    }
}

/// Batched on 4 connections (a batch every 37 adds or 20 ms): once flushed, every id holds
/// exactly its adds, and the ranking fed by the counter agrees.
async fn batched_adds_arrive_once(d: Deployment) {
    let mut counters = Vec::new();
    let mut rankings = Vec::new();
    for _ in 0..4 {
        let redis = d.redis().await;
        let ranking = Ranking::on(&redis, "popular").build().expect("valid");
        counters.push(
            Counter::on(&redis, "views")
                .batch(Duration::from_millis(20), 37)
                .ranking(&ranking)
                .build()
                .expect("valid"),
        );
        rankings.push(ranking);
    }
    let counters = Arc::new(counters);
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                for n in 0..100 {
                    // id k gets (k + 1) × 64 × 100 / 36 adds in total: distinct, so ranked.
                    let id = ((i * 100 + n) % 36) as u64;
                    let by = i64::try_from(id + 1).expect("small");
                    counters[i % 4].add(&format!("item{id}"), by).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
    for counter in counters.iter() {
        counter.flush().await.expect("flush");
        assert_eq!(counter.pending().await, 0);
    }
    let mut expected = vec![0i64; 36];
    for i in 0..64usize {
        for n in 0..100usize {
            let id = (i * 100 + n) % 36;
            expected[id] += i64::try_from(id + 1).expect("small");
        }
    }
    for (id, total) in expected.iter().enumerate() {
        let id = format!("item{id}");
        assert_eq!(counters[0].get(&id).await.expect("GET"), *total, "{id}");
        #[allow(clippy::cast_precision_loss)]
        let score = *total as f64;
        assert_eq!(rankings[2].score(&id).await.expect("ZSCORE"), Some(score));
    }
    let top = rankings[1].top(3).await.expect("top");
    let names: Vec<&str> = top.iter().map(|(m, _)| m.as_str()).collect();
    let mut by_total: Vec<(i64, String)> = expected
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, format!("item{i}")))
        .collect();
    by_total.sort_by(|a, b| b.cmp(a));
    let want: Vec<&str> = by_total[..3].iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(names, want);
}

/// Scores, ranks, the top and the neighbours of a member.
async fn a_ranking_answers_top_rank_and_neighbours(d: Deployment) {
    let redis = d.redis().await;
    let ranking = Ranking::on(&redis, "board").build().expect("valid");
    for (member, score) in [
        ("a", 5.0),
        ("b", 50.0),
        ("c", 20.0),
        ("d", 40.0),
        ("e", 30.0),
    ] {
        assert_eq!(ranking.incr(member, score).await.expect("ZINCRBY"), score);
    }
    assert_eq!(ranking.incr("a", 100.0).await.expect("ZINCRBY"), 105.0);
    let top: Vec<(String, f64)> = ranking.top(3).await.expect("top");
    assert_eq!(
        top,
        [
            ("a".to_owned(), 105.0),
            ("b".to_owned(), 50.0),
            ("d".to_owned(), 40.0)
        ]
    );
    assert_eq!(ranking.rank("a").await.expect("rank"), Some(0));
    assert_eq!(ranking.rank("c").await.expect("rank"), Some(4));
    assert_eq!(ranking.rank("nobody").await.expect("rank"), None);
    let (rank, around) = ranking
        .around("d", 1)
        .await
        .expect("around")
        .expect("d is ranked");
    assert_eq!(rank, 2);
    let names: Vec<&str> = around.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["b", "d", "e"]);
    let (_, edge) = ranking
        .around("a", 2)
        .await
        .expect("around")
        .expect("ranked");
    assert_eq!(edge.len(), 3, "nothing above the top: {edge:?}");
    assert_eq!(ranking.around("nobody", 1).await.expect("around"), None);
    assert!(ranking.remove("c").await.expect("ZREM"));
    assert_eq!(ranking.members().await.expect("ZCARD"), 4);
    assert_eq!(ranking.top(0).await.expect("top"), []);
}

deployment_suite!(standalone, cluster;
    concurrent_increments_lose_nothing,
    batched_adds_arrive_once,
    a_ranking_answers_top_rank_and_neighbours,
);

/// Adds from 16 callers into a counter batching every 100 adds (and never by time), on a
/// runtime of its own; then that runtime dies with the counter still alive (a crash). What
/// Redis holds is short of the adds by at most 100.
#[tokio::test]
async fn a_batching_counter_that_dies_loses_at_most_max_calls_adds() {
    let d = Deployment::start(Topology::Standalone);
    let builder = d.builder();
    const ADDS: i64 = 16 * 130;
    const MAX_CALLS: u64 = 100;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let counter = runtime.block_on(async move {
            let redis = builder.build().await.expect("connect");
            let counter = Counter::on(&redis, "doomed")
                .batch(Duration::from_secs(3600), MAX_CALLS)
                .build()
                .expect("valid");
            let callers: Vec<_> = (0..16)
                .map(|_| {
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        for _ in 0..130 {
                            counter.add("x", 1).await;
                        }
                    })
                })
                .collect();
            for caller in callers {
                caller.await.expect("a caller panicked");
            }
            counter
        });
        // A crash: no drop, no final flush, every task gone.
        std::mem::forget(counter);
        runtime.shutdown_background();
    })
    .join()
    .expect("the doomed runtime's thread");
    let stored: Option<i64> = d.conn().get("cnt:{doomed:x}").expect("GET");
    let stored = stored.unwrap_or(0);
    assert!(stored <= ADDS, "{stored} > {ADDS}: counted twice");
    let lost = ADDS - stored;
    assert!(
        lost <= i64::try_from(MAX_CALLS).expect("small"),
        "lost {lost} adds, more than one batch"
    );
}

/// Dropping the last handle of a batching counter sends what is pending.
#[tokio::test]
async fn dropping_a_batching_counter_sends_what_is_pending() {
    let d = Deployment::start(Topology::Standalone);
    let redis = d.redis().await;
    let counter = Counter::on(&redis, "dropped")
        .batch(Duration::from_secs(3600), 1000)
        .build()
        .expect("valid");
    for _ in 0..10 {
        counter.add("x", 2).await;
    }
    assert_eq!(counter.pending().await, 10);
    assert_eq!(counter.get("x").await.expect("GET"), 0, "nothing sent yet");
    let probe = Counter::on(&redis, "dropped").build().expect("valid");
    drop(counter);
    wait_until_async(Duration::from_secs(10), || async {
        probe.get("x").await.expect("GET") == 20
    })
    .await;
}

/// While the circuit is open a batch is not sent: it stays pending and is sent, once, when
/// Redis is back.
#[tokio::test]
async fn a_batch_redis_could_not_take_is_sent_later_once() {
    let mut d = Deployment::start(Topology::Standalone);
    let port = d.server().port();
    let redis = d
        .builder()
        .circuit_breaker(1, Duration::from_millis(200))
        .build()
        .await
        .expect("connect");
    let counter = Counter::on(&redis, "outage")
        .batch(Duration::from_secs(3600), 1000)
        .build()
        .expect("valid");
    d.server().kill();
    let probe = cached_runtime::connection::cmd("GET").arg("probe").clone();
    wait_until_async(Duration::from_secs(10), || async {
        matches!(
            redis.query::<Option<String>>(&probe).await,
            Err(cached_runtime::CacheError::CircuitOpen)
        )
    })
    .await;
    counter.add("x", 5).await;
    counter.add("x", 1).await;
    // Refused by the open circuit (or, probing, by the dead server): nothing was sent.
    assert!(counter.flush().await.is_err());
    assert_eq!(counter.pending().await, 2);
    let restarted = tests::RedisServer::start_on(port);
    wait_until_async(Duration::from_secs(20), || async {
        counter.flush().await.is_ok()
    })
    .await;
    let stored: Option<i64> = restarted.conn().get("cnt:{outage:x}").expect("GET");
    assert_eq!(stored, Some(6), "the retained adds arrive once");
    assert_eq!(counter.pending().await, 0);
}
