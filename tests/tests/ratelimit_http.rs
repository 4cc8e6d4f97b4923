//! The rate limiter in front of HTTP handlers: the Actix middleware and the tower layer under
//! axum answer `429` with a problem body, send `RateLimit`, `RateLimit-Policy` and
//! `Retry-After` values that match the decisions, identify clients behind trusted proxies
//! without believing forged forwarded entries, and never answer `500` when Redis is gone.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use actix_web::{
    App, HttpResponse,
    body::MessageBody,
    dev::{Service, ServiceResponse},
    test::{self, TestRequest},
    web,
};
use cached_runtime::ratelimit::{Limit, RateLimiter, TrustedProxies, actix::RateLimit};
use serde_json::Value;
use tests::{deployment::Deployment, topology::Topology};

/// One item of a structured-field list: its name and integer parameters.
type Item = (String, BTreeMap<String, u64>);

/// Parses `"a";r=1;t=2, "b";q=3;w=4` (the fields this crate writes).
fn items(field: &str) -> Vec<Item> {
    field
        .split(',')
        .map(|item| {
            let mut parts = item.trim().split(';');
            let name = parts.next().expect("a name").trim_matches('"').to_owned();
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("key=value");
                    (k.to_owned(), v.parse().expect("an integer"))
                })
                .collect();
            (name, params)
        })
        .collect()
}

/// What the tests read back from a response.
#[derive(Debug)]
struct Answer {
    status: u16,
    ratelimit: Option<Vec<Item>>,
    policy: Option<String>,
    retry_after: Option<u64>,
    content_type: Option<String>,
    body: Value,
}

async fn actix_answer<B: MessageBody>(response: ServiceResponse<B>) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII").to_owned())
    };
    let (ratelimit, policy, retry_after, content_type) = (
        header("ratelimit").map(|v| items(&v)),
        header("ratelimit-policy"),
        header("retry-after").map(|v| v.parse().expect("seconds")),
        header("content-type"),
    );
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    Answer {
        status,
        ratelimit,
        policy,
        retry_after,
        content_type,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

fn limits() -> [Limit; 2] {
    [
        // One every 20 s, three at once; one every 36 s, a hundred at once.
        Limit::per_minute(3).burst(2).name("per-minute"),
        Limit::per_hour(100).burst(99).name("per-hour"),
    ]
}

async fn limiter(d: &Deployment, name: &str, proxies: TrustedProxies) -> RateLimiter {
    let redis = d.redis().await;
    limits()
        .into_iter()
        .fold(RateLimiter::on(&redis, name), |b, l| b.limit(l))
        .trusted_proxies(proxies)
        .fail_open()
        .build()
        .expect("a valid limiter")
}

const POLICY: &str = r#""per-minute";q=5;w=60, "per-hour";q=199;w=3600"#;

/// Four requests of one client: three admitted with the remaining counts falling, the
/// fourth refused by the minute limit alone, with a problem body and a `Retry-After` no
/// earlier than the window it announces.
fn check_sequence(answers: &[Answer]) {
    for (i, answer) in answers[..3].iter().enumerate() {
        let k = i as u64 + 1;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.policy.as_deref(), Some(POLICY));
        assert_eq!(answer.retry_after, None);
        let items = answer
            .ratelimit
            .as_ref()
            .expect("RateLimit on an allowed response");
        assert_eq!(items.len(), 2);
        let (minute, hour) = (&items[0], &items[1]);
        assert_eq!(minute.0, "per-minute");
        assert_eq!(minute.1["r"], 3 - k);
        // t: seconds until whole again, k intervals ahead (less the time the test took).
        assert!((k * 20 - 5..=k * 20).contains(&minute.1["t"]), "{answer:?}");
        assert_eq!(hour.0, "per-hour");
        assert_eq!(hour.1["r"], 100 - k);
        assert!((k * 36 - 5..=k * 36).contains(&hour.1["t"]), "{answer:?}");
    }
    for refused in &answers[3..] {
        assert_eq!(refused.status, 429, "{refused:?}");
        assert_eq!(refused.policy.as_deref(), Some(POLICY));
        assert_eq!(
            refused.content_type.as_deref(),
            Some("application/problem+json")
        );
        let items = refused.ratelimit.as_ref().expect("RateLimit on a refusal");
        assert_eq!(items.len(), 1, "only the refusing limit: {items:?}");
        assert_eq!(items[0].0, "per-minute");
        assert_eq!(items[0].1["r"], 0);
        let t = items[0].1["t"];
        assert!((15..=20).contains(&t), "{refused:?}");
        let retry = refused.retry_after.expect("Retry-After on a refusal");
        assert!(
            retry >= t,
            "Retry-After {retry} before the window's end {t}"
        );
        assert!(retry <= 20);
        assert_eq!(
            refused.body["type"],
            "https://iana.org/assignments/http-problem-types#quota-exceeded"
        );
        assert_eq!(refused.body["status"], 429);
        assert_eq!(
            refused.body["violated-policies"],
            serde_json::json!(["per-minute"])
        );
    }
}

#[tokio::test]
async fn actix_middleware_fields_match_the_decisions() {
    let d = Deployment::start(Topology::Standalone);
    let limiter = limiter(&d, "actix-fields", TrustedProxies::none()).await;
    let app = test::init_service(App::new().wrap(RateLimit::new(limiter.clone())).route(
        "/",
        web::get().to(|| async { HttpResponse::Ok().body("hello") }),
    ))
    .await;
    let peer: SocketAddr = "203.0.113.9:4711".parse().expect("an address");
    let mut answers = Vec::new();
    for _ in 0..5 {
        let request = TestRequest::get().uri("/").peer_addr(peer).to_request();
        answers.push(actix_answer(app.call(request).await.expect("no error")).await);
    }
    check_sequence(&answers);
    // The decisions behind them: Redis holds the client's state under its address.
    let peek = limiter.check("203.0.113.9", 0).await;
    assert_eq!(peek.remaining(), 0);
}

#[tokio::test]
async fn tower_layer_fields_match_the_decisions_under_axum() {
    use cached_runtime::ratelimit::tower::RateLimitLayer;
    let d = Deployment::start(Topology::Standalone);
    let limiter = limiter(&d, "axum-fields", TrustedProxies::none()).await;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(RateLimitLayer::new(limiter.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let response = client
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect("a response");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("ASCII").to_owned())
        };
        let (ratelimit, policy, retry_after, content_type) = (
            header("ratelimit").map(|v| items(&v)),
            header("ratelimit-policy"),
            header("retry-after").map(|v| v.parse().expect("seconds")),
            header("content-type"),
        );
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("a body");
        answers.push(Answer {
            status,
            ratelimit,
            policy,
            retry_after,
            content_type,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
    }
    check_sequence(&answers);
    assert_eq!(limiter.check("127.0.0.1", 0).await.remaining(), 0);
    server.abort();
}

/// Behind proxies in 10.0.0.0/8, a client that forges the left of `X-Forwarded-For` is
/// still the address the proxy appended; a peer outside them cannot speak for anyone.
#[tokio::test]
async fn forged_forwarded_entries_do_not_change_the_client() {
    let d = Deployment::start(Topology::Standalone);
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).expect("valid networks");
    let limiter = limiter(&d, "proxies", proxies).await;
    let app = test::init_service(
        App::new()
            .wrap(RateLimit::new(limiter.clone()))
            .route("/", web::get().to(|| async { HttpResponse::Ok().finish() })),
    )
    .await;
    let status = |peer: &'static str, forwarded: Option<String>| {
        let mut request = TestRequest::get()
            .uri("/")
            .peer_addr(peer.parse().expect("an address"));
        if let Some(f) = forwarded {
            request = request.insert_header(("x-forwarded-for", f));
        }
        let call = app.call(request.to_request());
        async move { call.await.expect("no error").status().as_u16() }
    };
    // Three at once per client: a fresh forgery each time does not buy a fourth.
    for i in 0..3 {
        let forged = format!("6.6.6.{i}, 10.9.9.9, 203.0.113.9");
        assert_eq!(status("10.0.0.2:80", Some(forged)).await, 200);
    }
    assert_eq!(
        status("10.0.0.2:80", Some("1.2.3.4, 203.0.113.9".to_owned())).await,
        429
    );
    // Another client behind the same proxy has its own limit.
    assert_eq!(
        status("10.0.0.3:80", Some("203.0.113.10".to_owned())).await,
        200
    );
    // An untrusted peer claiming to forward for the exhausted client is keyed by itself.
    assert_eq!(
        status("198.51.100.1:80", Some("203.0.113.9".to_owned())).await,
        200
    );
    assert_eq!(limiter.check("198.51.100.1", 0).await.remaining(), 2);
    assert_eq!(limiter.check("203.0.113.9", 0).await.remaining(), 0);
}

/// Requests the key function leaves out are never limited.
#[tokio::test]
async fn requests_without_a_key_are_not_limited() {
    let d = Deployment::start(Topology::Standalone);
    let limiter = limiter(&d, "keyless", TrustedProxies::none()).await;
    let app = test::init_service(
        App::new()
            .wrap(
                RateLimit::new(limiter)
                    .key(|req| (req.path() != "/healthz").then(|| "everyone".to_owned())),
            )
            .route("/", web::get().to(|| async { HttpResponse::Ok().finish() }))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            ),
    )
    .await;
    let call = |path: &'static str| {
        let call = app.call(TestRequest::get().uri(path).to_request());
        async move { call.await.expect("no error") }
    };
    for _ in 0..3 {
        assert_eq!(call("/").await.status(), 200);
    }
    assert_eq!(call("/").await.status(), 429);
    for _ in 0..10 {
        let health = call("/healthz").await;
        assert_eq!(health.status(), 200);
        assert!(health.headers().get("ratelimit").is_none());
    }
}

/// Redis killed: a fail-closed limiter answers `503` with `Retry-After: 1` and the
/// reduced-capacity problem; a fail-open one keeps admitting within its in-process limit
/// and then answers `429`. Never a `500`.
#[tokio::test]
async fn with_redis_gone_the_middleware_answers_503_or_429_never_500() {
    let mut d = Deployment::start(Topology::Standalone);
    let redis = d.redis_with_timeout(Duration::from_millis(200)).await;
    let build = |name: &str, fail_open: bool| {
        let b = RateLimiter::on(&redis, name).limit(Limit::per_hour(60).burst(1));
        let b = if fail_open {
            b.fail_open()
        } else {
            b.fail_closed()
        };
        b.build().expect("a valid limiter")
    };
    let (closed, open) = (build("gone-closed", false), build("gone-open", true));
    let app = test::init_service(
        App::new()
            .service(
                web::scope("/closed")
                    .wrap(RateLimit::new(closed))
                    .route("", web::get().to(|| async { HttpResponse::Ok().finish() })),
            )
            .service(
                web::scope("/open")
                    .wrap(RateLimit::new(open))
                    .route("", web::get().to(|| async { HttpResponse::Ok().finish() })),
            ),
    )
    .await;
    d.server().kill();
    let peer: SocketAddr = "203.0.113.9:1".parse().expect("an address");
    let get = |path: &'static str| {
        let call = app.call(TestRequest::get().uri(path).peer_addr(peer).to_request());
        async move { actix_answer(call.await.expect("no error")).await }
    };
    for _ in 0..3 {
        let answer = get("/closed").await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.retry_after, Some(1));
        assert_eq!(answer.ratelimit, None);
        assert!(answer.policy.is_some());
        assert_eq!(
            answer.body["type"],
            "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
        );
    }
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(get("/open").await.status);
        }
        out
    };
    assert_eq!(statuses, [200, 200, 429, 429]);
}
