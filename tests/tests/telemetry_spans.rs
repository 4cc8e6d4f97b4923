//! The `cache.get` span of each call, read from a subscriber's output. Alone in its binary:
//! `tracing` caches per call site whether anyone listens, and a test hitting the same call
//! sites on another thread at the moment a subscriber is set could leave that cache stale.

use cached_runtime::shape::Plain;
use redis::Commands;
use tests::{RedisServer, fixtures::policy_with_ttl, logs::Captured};

fn subscriber(level: tracing::Level, out: &Captured) -> impl tracing::Subscriber + Send + Sync {
    let out = out.clone();
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || out.clone())
        .finish()
}

#[tokio::test]
async fn each_call_has_a_debug_span_with_its_outcome_and_no_argument_values() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("spans")
        .build()
        .await
        .expect("connect");
    let policy = policy_with_ttl("user", 60);
    let email = "alice.personal@example.com";
    let key = cache.key("user").arg(email).build().expect("key");
    let call = || {
        cache.get_or_fill::<Plain, u64, _>(&key, &policy, async {
            tracing::info!("body ran");
            7
        })
    };

    let debug = Captured::default();
    {
        let _guard = tracing::subscriber::set_default(subscriber(tracing::Level::DEBUG, &debug));
        assert_eq!(call().await, 7);
        assert_eq!(call().await, 7);
        // A corrupt entry: its debug log names the key by hash too.
        let _: () = server.conn().set(key.as_str(), "garbage").expect("SET");
        assert_eq!(call().await, 7);
    }
    let out = debug.text();
    let spans: Vec<&str> = out.lines().filter(|l| l.contains("cache.get{")).collect();
    assert_eq!(
        spans.iter().filter(|l| l.contains("close")).count(),
        3,
        "{out}"
    );
    for outcome in ["miss", "hit"] {
        assert!(
            spans
                .iter()
                .any(|l| l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("cache=\"spans\"")
                    && l.contains("prefix=\"user\"")
                    && l.contains("redis_ms=")),
            "no {outcome} span with its fields in:\n{out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.contains("body ran") && l.contains("cache.get{")),
        "the body runs inside the span:\n{out}"
    );
    assert!(
        out.contains("key=user#"),
        "keys appear as prefix#hash:\n{out}"
    );
    assert!(out.contains("unusable cache entry"), "{out}");
    assert!(
        !out.contains(email) && !out.contains("alice"),
        "an argument value leaked at debug:\n{out}"
    );

    // The full key is for trace level only.
    let trace = Captured::default();
    {
        let _guard = tracing::subscriber::set_default(subscriber(tracing::Level::TRACE, &trace));
        let _: () = server.conn().set(key.as_str(), "garbage").expect("SET");
        assert_eq!(call().await, 7);
    }
    assert!(trace.text().contains("alice.personal"), "{}", trace.text());
}
