//! `#[rate_limit]` on Actix and axum handlers against a real redis-server: a refused call
//! answers the limiter's refusal without running the body, an allowed one carries the
//! `RateLimit` fields, and the client comes from the request or from `key = …`.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use actix_web::{
    App, HttpRequest, HttpResponse,
    dev::Service,
    test::{self, TestRequest},
    web,
};
use cached_runtime::ratelimit::{Limit, Limited, RateLimiter, rate_limit};
use tests::{deployment::Deployment, topology::Topology};

struct State {
    limiter: RateLimiter,
    runs: AtomicUsize,
}

async fn state(d: &Deployment, name: &str) -> web::Data<State> {
    let redis = d.redis().await;
    let limiter = RateLimiter::on(&redis, name)
        .limit(Limit::per_hour(60).burst(1).name("hourly"))
        .fail_closed()
        .build()
        .expect("a valid limiter");
    web::Data::new(State {
        limiter,
        runs: AtomicUsize::new(0),
    })
}

#[rate_limit(limiter = state.limiter)]
async fn hello(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    state.runs.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().body(format!("hello {}", req.path()))
}

#[rate_limit(limiter = state.limiter, key = format!("item:{}", id), cost = 1)]
async fn item(state: web::Data<State>, id: web::Path<u32>) -> Limited<web::Json<u32>> {
    state.runs.fetch_add(1, Ordering::SeqCst);
    Limited::from(web::Json(*id * 2))
}

#[rate_limit(limiter = &state.limiter, key = "everyone")]
async fn fallible(
    state: web::Data<State>,
    n: web::Path<u8>,
) -> Result<HttpResponse, actix_web::Error> {
    state.runs.fetch_add(1, Ordering::SeqCst);
    let n: u8 = n
        .into_inner()
        .checked_add(1)
        .ok_or_else(|| actix_web::error::ErrorBadRequest("too big"))?;
    Ok(HttpResponse::Ok().body(n.to_string()))
}

#[tokio::test]
async fn an_actix_handler_runs_only_when_allowed_and_answers_with_the_fields() {
    let d = Deployment::start(Topology::Standalone);
    let state = state(&d, "attr-actix").await;
    let app = test::init_service(
        App::new()
            .app_data(state.clone())
            .route("/hello", web::get().to(hello))
            .route("/item/{id}", web::get().to(item)),
    )
    .await;
    let peer: SocketAddr = "203.0.113.9:1".parse().expect("an address");
    let get = |path: &'static str| {
        let call = app.call(TestRequest::get().uri(path).peer_addr(peer).to_request());
        async move { call.await.expect("no error") }
    };
    for left in ["1", "0"] {
        let allowed = get("/hello").await;
        assert_eq!(allowed.status(), 200);
        let field = allowed.headers().get("ratelimit").expect("RateLimit");
        assert!(
            field
                .to_str()
                .expect("ASCII")
                .starts_with(&format!("\"hourly\";r={left};")),
            "{field:?}"
        );
        assert_eq!(test::read_body(allowed).await, "hello /hello");
    }
    let refused = get("/hello").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(
        state.runs.load(Ordering::SeqCst),
        2,
        "the refused body did not run"
    );
    // `key = …`: per item, whoever asks; a `Limited` answer keeps its JSON.
    for _ in 0..2 {
        let allowed = get("/item/21").await;
        assert_eq!(allowed.status(), 200);
        assert!(allowed.headers().get("ratelimit-policy").is_some());
        assert_eq!(test::read_body(allowed).await, "42");
    }
    assert_eq!(get("/item/21").await.status(), 429);
    assert_eq!(get("/item/22").await.status(), 200);
    assert_eq!(state.runs.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_result_handler_keeps_its_errors_and_is_refused_as_ok() {
    let d = Deployment::start(Topology::Standalone);
    let state = state(&d, "attr-result").await;
    let app = test::init_service(
        App::new()
            .app_data(state.clone())
            .route("/{n}", web::get().to(fallible)),
    )
    .await;
    let status = |query: &'static str| {
        let call = app.call(TestRequest::get().uri(query).to_request());
        async move {
            match call.await {
                Ok(response) => response.status().as_u16(),
                Err(e) => e.as_response_error().status_code().as_u16(),
            }
        }
    };
    assert_eq!(status("/255").await, 400, "the body's own error, charged");
    assert_eq!(status("/1").await, 200);
    assert_eq!(status("/1").await, 429);
    assert_eq!(state.runs.load(Ordering::SeqCst), 2);
}

mod axum_handlers {
    use std::{net::SocketAddr, sync::Arc};

    use axum::{
        Router,
        extract::{ConnectInfo, State},
        http::HeaderMap,
        response::{IntoResponse, Response},
        routing::get,
    };
    use cached_runtime::ratelimit::{Limit, RateLimiter, TrustedProxies, rate_limit};
    use tests::{deployment::Deployment, topology::Topology};

    #[rate_limit(limiter = limiter)]
    async fn hello(
        State(limiter): State<Arc<RateLimiter>>,
        info: ConnectInfo<SocketAddr>,
        headers: HeaderMap,
    ) -> Response {
        format!("hello {}", info.0.ip()).into_response()
    }

    #[tokio::test]
    async fn an_axum_handler_reads_the_client_behind_a_trusted_proxy() {
        let d = Deployment::start(Topology::Standalone);
        let redis = d.redis().await;
        let limiter = RateLimiter::on(&redis, "attr-axum")
            .limit(Limit::per_hour(60).burst(1).name("hourly"))
            .trusted_proxies(TrustedProxies::new(["127.0.0.1"]).expect("valid"))
            .fail_closed()
            .build()
            .expect("a valid limiter");
        let app = Router::new()
            .route("/", get(hello))
            .with_state(Arc::new(limiter.clone()));
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
        let get = |forwarded: &'static str| {
            let request = client
                .get(format!("http://{addr}/"))
                .header("x-forwarded-for", forwarded);
            async move { request.send().await.expect("a response") }
        };
        for spoof in ["1.1.1.1, 203.0.113.9", "2.2.2.2, 203.0.113.9"] {
            let allowed = get(spoof).await;
            assert_eq!(allowed.status(), 200);
            assert!(allowed.headers().get("ratelimit").is_some());
        }
        let refused = get("3.3.3.3, 203.0.113.9").await;
        assert_eq!(refused.status(), 429);
        assert_eq!(
            refused.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        assert_eq!(get("203.0.113.10").await.status(), 200);
        assert_eq!(limiter.check("203.0.113.9", 0).await.remaining(), 0);
        server.abort();
    }
}
