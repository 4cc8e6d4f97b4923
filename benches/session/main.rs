//! Session stores over real HTTP, on one private redis-server on loopback, in the same run:
//!
//! - Actix Web with actix-session on `cached_runtime::session::Sessions` and on actix-session's
//!   own `RedisSessionStore`;
//! - axum with tower-sessions on `Sessions` and on `tower-sessions-redis-store` (fred).
//!
//! For each: a request that reads its session (`GET /me`) and one that changes it
//! (`POST /set/{n}`), 16 callers each with a session of its own: requests a second, and the
//! Redis commands each request sent, counted through a proxy in a separate pass (a script is
//! one command and one round trip; nothing here pipelines).
//!
//! `cargo bench -p benches --bench session [-- --secs N]` (default 2 s per measurement).
//! Needs `redis-server` on the `PATH` (or `REDIS_SERVER_BIN`). Prints a Markdown table.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_session::{Session as ActixSession, SessionMiddleware, storage::RedisSessionStore};
use actix_web::{App, HttpResponse, HttpServer, cookie::Key, web};
use axum::{
    Router,
    extract::Path,
    routing::{get, post},
};
use cached_runtime::{Redis, session::Sessions};
use tests::{RedisServer, proxy::Proxy};
use tower_sessions_redis_store::{
    RedisStore,
    fred::prelude::{ClientLike, Config, Pool},
};

const CALLERS: usize = 16;

fn listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("non-blocking");
    l
}

fn actix_app<S>(store: S) -> String
where
    S: actix_session::storage::SessionStore + Clone + Send + 'static,
{
    async fn login(s: ActixSession) -> HttpResponse {
        let _ = s.insert("user", "alice");
        HttpResponse::Ok().finish()
    }
    async fn me(s: ActixSession) -> HttpResponse {
        match s.get::<String>("user") {
            Ok(Some(u)) => HttpResponse::Ok().body(u),
            _ => HttpResponse::Unauthorized().finish(),
        }
    }
    async fn set(s: ActixSession, n: web::Path<u64>) -> HttpResponse {
        let _ = s.insert("n", *n);
        HttpResponse::Ok().finish()
    }
    let l = listener();
    let addr = l.local_addr().expect("addr");
    let key = Key::generate();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .build(),
            )
            .route("/login", web::post().to(login))
            .route("/me", web::get().to(me))
            .route("/set/{n}", web::post().to(set))
    })
    .workers(2)
    .disable_signals()
    .listen(l)
    .expect("listen")
    .run();
    tokio::spawn(server);
    format!("http://{addr}")
}

/// The same axum app on one version of tower-sessions.
macro_rules! axum_app {
    ($name:ident, $ts:ident) => {
        fn $name<S: $ts::SessionStore + Clone>(store: S) -> String {
            async fn login(s: $ts::Session) -> &'static str {
                let _ = s.insert("user", "alice").await;
                "ok"
            }
            async fn me(s: $ts::Session) -> Result<String, axum::http::StatusCode> {
                match s.get::<String>("user").await {
                    Ok(Some(u)) => Ok(u),
                    _ => Err(axum::http::StatusCode::UNAUTHORIZED),
                }
            }
            async fn set(s: $ts::Session, Path(n): Path<u64>) -> &'static str {
                let _ = s.insert("n", n).await;
                "ok"
            }
            let l = tokio::net::TcpListener::from_std(listener()).expect("listener");
            let addr = l.local_addr().expect("addr");
            let router = Router::new()
                .route("/login", post(login))
                .route("/me", get(me))
                .route("/set/{n}", post(set))
                .layer($ts::SessionManagerLayer::new(store).with_secure(false));
            tokio::spawn(async move { axum::serve(l, router).await });
            format!("http://{addr}")
        }
    };
}

axum_app!(axum_app, tower_sessions);
axum_app!(axum_app_014, tower_sessions_014);

/// A signed-in session: its cookie header.
async fn login(client: &reqwest::Client, base: &str) -> String {
    let r = client
        .post(format!("{base}/login"))
        .send()
        .await
        .expect("login");
    assert!(r.status().is_success(), "login: {}", r.status());
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().map(str::to_owned))
        .expect("a session cookie")
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

async fn request(client: &reqwest::Client, base: &str, cookie: &str, op: Op, n: u64) {
    let r = match op {
        Op::Read => client.get(format!("{base}/me")),
        Op::Write => client.post(format!("{base}/set/{n}")),
    }
    .header("cookie", cookie)
    .send()
    .await
    .expect("answers");
    assert!(r.status().is_success(), "{}", r.status());
}

/// Requests a second, `CALLERS` callers each on a session of its own.
async fn throughput(base: &str, op: Op, secs: Duration) -> f64 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut cookies = Vec::new();
    for _ in 0..CALLERS {
        cookies.push(login(&client, base).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = cookies
        .into_iter()
        .map(|cookie| {
            let (client, base) = (client.clone(), base.to_owned());
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    request(&client, &base, &cookie, op, n).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a caller panicked");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Commands that reach Redis through `proxy` per request of `op`, over 100 requests.
async fn commands_per_request(proxy: &Proxy, base: &str, op: Op) -> f64 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let cookie = login(&client, base).await;
    // Warm: scripts loaded, connections made.
    request(&client, base, &cookie, op, 0).await;
    let count = || -> usize { proxy.traffic().iter().map(|t| t.commands.len()).sum() };
    let before = count();
    for n in 1..=100 {
        request(&client, base, &cookie, op, n).await;
    }
    (count() - before) as f64 / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs);
    let server = RedisServer::start();
    let proxy = Proxy::start(server.addr());
    let mut rows = Vec::new();
    // Each store twice: straight to the server (throughput), and through the proxy (commands).
    for via_proxy in [false, true] {
        let url = if via_proxy { proxy.url() } else { server.url() };
        let redis = Redis::builder(url.clone()).build().await.expect("connect");
        let ours = Sessions::builder(&redis).build().expect("store");
        let actix_peer = RedisSessionStore::new(url.clone())
            .await
            .expect("actix peer");
        let pool = Pool::new(Config::from_url(&url).expect("url"), None, None, None, 4)
            .expect("fred pool");
        // The connection task runs on its own; its handle is not needed.
        drop(pool.connect());
        pool.wait_for_connect().await.expect("fred connects");
        let apps = [
            (
                "Actix + actix-session",
                "cached_runtime Sessions",
                actix_app(ours.clone()),
            ),
            (
                "Actix + actix-session",
                "RedisSessionStore (actix-session)",
                actix_app(actix_peer),
            ),
            (
                "axum + tower-sessions",
                "cached_runtime Sessions",
                axum_app(ours.clone()),
            ),
            (
                "axum + tower-sessions",
                "RedisStore (tower-sessions-redis-store)",
                axum_app_014(RedisStore::new(pool)),
            ),
        ];
        for (i, (framework, store, base)) in apps.into_iter().enumerate() {
            for (j, op) in [Op::Read, Op::Write].into_iter().enumerate() {
                if via_proxy {
                    let c = commands_per_request(&proxy, &base, op).await;
                    let row: &mut (String, String, [f64; 2], [f64; 2]) = &mut rows[i];
                    row.3[j] = c;
                } else {
                    if j == 0 {
                        rows.push((framework.to_owned(), store.to_owned(), [0.0; 2], [0.0; 2]));
                    }
                    rows[i].2[j] = throughput(&base, op, secs).await;
                }
            }
        }
    }
    println!(
        "| framework | store | read req/s | write req/s | commands per read | commands per write |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (framework, store, rps, cmds) in rows {
        println!(
            "| {framework} | {store} | {:.0} | {:.0} | {:.2} | {:.2} |",
            rps[0], rps[1], cmds[0], cmds[1]
        );
    }
}
