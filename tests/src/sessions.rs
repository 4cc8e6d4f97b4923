//! The session fixture: one small app, served by Actix Web with actix-session and by axum with
//! tower-sessions, both on a [`Sessions`] store, on a free loopback port. Its routes:
//!
//! | route | what it does |
//! |---|---|
//! | `POST /login/{user}` | renews the id (privilege change) and stores `user` |
//! | `GET /me` | `200 {"user": …}`, or `401` without one |
//! | `POST /set/{field}/{value}` | stores one field |
//! | `POST /slow/{field}/{value}` | loads the session, waits at the [`Gate`], then stores the field |
//! | `GET /fields/{n}` | the fields `f0` … `f{n-1}` that are present, as a JSON object |
//! | `POST /renew` | renews the id |
//! | `POST /logout` | ends this session |
//! | `POST /logout-all` | ends every session of this user, then this one |

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::session::Sessions;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// Which framework serves the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framework {
    /// Actix Web with actix-session.
    Actix,
    /// axum with tower-sessions.
    Axum,
}

/// Holds `/slow` requests after they loaded their session, until released.
#[derive(Debug)]
pub struct Gate {
    arrived: AtomicUsize,
    open: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Self {
        Self {
            arrived: AtomicUsize::new(0),
            open: watch::Sender::new(false),
        }
    }

    async fn pass(&self) {
        let mut open = self.open.subscribe();
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let _ = open.wait_for(|open| *open).await;
    }

    /// How many requests are waiting (or have waited) here.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Lets every waiting and later request through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

/// A running app.
#[derive(Debug)]
pub struct SessionApp {
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    /// The `/slow` gate.
    pub gate: Arc<Gate>,
    /// The name of the session cookie.
    pub cookie: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SessionApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The idle timeout the apps give their framework (actix-session's state TTL, tower-sessions'
/// inactivity expiry).
pub const IDLE: Duration = Duration::from_secs(60);

impl SessionApp {
    /// Serves the app with `framework` on `store`.
    pub async fn start(framework: Framework, store: Sessions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("its address");
        let gate = Arc::new(Gate::new());
        let (task, cookie) = match framework {
            Framework::Actix => (actix_app::serve(listener, store, Arc::clone(&gate)), "id"),
            Framework::Axum => (axum_app::serve(listener, store, Arc::clone(&gate)), "id"),
        };
        let app = Self {
            base: format!("http://{addr}"),
            gate,
            cookie,
            task,
        };
        app.wait_until_serving(addr).await;
        app
    }

    async fn wait_until_serving(&self, addr: SocketAddr) {
        crate::wait_until(crate::GENEROUS_TIMEOUT, || {
            std::net::TcpStream::connect(addr).is_ok()
        })
        .await;
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client with a cookie jar of its own: one browser.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .timeout(crate::GENEROUS_TIMEOUT)
            .build()
            .expect("an http client")
    }

    /// A client that keeps no cookies: requests carry the `Cookie` header they are given.
    pub fn bare(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(crate::GENEROUS_TIMEOUT)
            .build()
            .expect("an http client")
    }
}

/// The value of the session cookie a response sets, if it sets one.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?;
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
}

fn present(n: usize, mut get: impl FnMut(&str) -> Option<Value>) -> Value {
    let mut map = Map::new();
    for i in 0..n {
        let name = format!("f{i}");
        if let Some(v) = get(&name) {
            map.insert(name, v);
        }
    }
    Value::Object(map)
}

mod actix_app {
    use super::*;
    use actix_session::{Session, SessionMiddleware, config::PersistentSession};
    use actix_web::{
        App, HttpResponse, HttpServer,
        cookie::{Key, time},
        web,
    };

    pub(super) fn serve(
        listener: TcpListener,
        store: Sessions,
        gate: Arc<Gate>,
    ) -> tokio::task::JoinHandle<()> {
        let key = Key::generate();
        let server = HttpServer::new(move || {
            let idle = time::Duration::seconds(IDLE.as_secs().cast_signed());
            App::new()
                .app_data(web::Data::new(store.clone()))
                .app_data(web::Data::from(Arc::clone(&gate)))
                .wrap(
                    SessionMiddleware::builder(store.clone(), key.clone())
                        .cookie_secure(false)
                        .cookie_name("id".to_owned())
                        .session_lifecycle(PersistentSession::default().session_ttl(idle))
                        .build(),
                )
                .route("/login/{user}", web::post().to(login))
                .route("/me", web::get().to(me))
                .route("/set/{field}/{value}", web::post().to(set))
                .route("/slow/{field}/{value}", web::post().to(slow))
                .route("/fields/{n}", web::get().to(fields))
                .route("/renew", web::post().to(renew))
                .route("/logout", web::post().to(logout))
                .route("/logout-all", web::post().to(logout_all))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(async move {
            let _ = server.await;
        })
    }

    fn error(e: impl std::fmt::Display) -> HttpResponse {
        HttpResponse::InternalServerError().body(e.to_string())
    }

    async fn login(session: Session, user: web::Path<String>) -> HttpResponse {
        session.renew();
        match session.insert("user", user.as_str()) {
            Ok(()) => HttpResponse::Ok().json(json!({"user": *user})),
            Err(e) => error(e),
        }
    }

    async fn me(session: Session) -> HttpResponse {
        match session.get::<String>("user") {
            Ok(Some(user)) => HttpResponse::Ok().json(json!({"user": user})),
            Ok(None) => HttpResponse::Unauthorized().finish(),
            Err(e) => error(e),
        }
    }

    async fn set(session: Session, path: web::Path<(String, String)>) -> HttpResponse {
        let (field, value) = path.into_inner();
        match session.insert(field, value) {
            Ok(()) => HttpResponse::Ok().finish(),
            Err(e) => error(e),
        }
    }

    async fn slow(
        session: Session,
        gate: web::Data<Gate>,
        path: web::Path<(String, String)>,
    ) -> HttpResponse {
        gate.pass().await;
        set(session, path).await
    }

    async fn fields(session: Session, n: web::Path<usize>) -> HttpResponse {
        HttpResponse::Ok().json(present(*n, |name| {
            session.get::<Value>(name).ok().flatten()
        }))
    }

    async fn renew(session: Session) -> HttpResponse {
        session.renew();
        HttpResponse::Ok().finish()
    }

    async fn logout(session: Session) -> HttpResponse {
        session.purge();
        HttpResponse::Ok().finish()
    }

    async fn logout_all(session: Session, store: web::Data<Sessions>) -> HttpResponse {
        let user = match session.get::<String>("user") {
            Ok(Some(user)) => user,
            Ok(None) => return HttpResponse::Unauthorized().finish(),
            Err(e) => return error(e),
        };
        match store.end_all(&user).await {
            Ok(n) => {
                session.purge();
                HttpResponse::Ok().json(json!({"ended": n}))
            }
            Err(e) => error(e),
        }
    }
}

mod axum_app {
    use super::*;
    use axum::{
        Json, Router,
        extract::{Path, State},
        http::StatusCode,
        response::{IntoResponse, Response},
        routing::{get, post},
    };
    use tower_sessions::{Expiry, Session, SessionManagerLayer};

    #[derive(Clone)]
    struct AppState {
        store: Sessions,
        gate: Arc<Gate>,
    }

    pub(super) fn serve(
        listener: TcpListener,
        store: Sessions,
        gate: Arc<Gate>,
    ) -> tokio::task::JoinHandle<()> {
        let idle = tower_sessions::cookie::time::Duration::seconds(IDLE.as_secs().cast_signed());
        let layer = SessionManagerLayer::new(store.clone())
            .with_secure(false)
            .with_expiry(Expiry::OnInactivity(idle));
        let router = Router::new()
            .route("/login/{user}", post(login))
            .route("/me", get(me))
            .route("/set/{field}/{value}", post(set))
            .route("/slow/{field}/{value}", post(slow))
            .route("/fields/{n}", get(fields))
            .route("/renew", post(renew))
            .route("/logout", post(logout))
            .route("/logout-all", post(logout_all))
            .layer(layer)
            .with_state(AppState { store, gate });
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        })
    }

    fn error(e: impl std::fmt::Display) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
    }

    async fn login(session: Session, Path(user): Path<String>) -> Response {
        if let Err(e) = session.cycle_id().await {
            return error(e);
        }
        match session.insert("user", &user).await {
            Ok(()) => Json(json!({"user": user})).into_response(),
            Err(e) => error(e),
        }
    }

    async fn me(session: Session) -> Response {
        match session.get::<String>("user").await {
            Ok(Some(user)) => Json(json!({"user": user})).into_response(),
            Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
            Err(e) => error(e),
        }
    }

    async fn set(session: Session, Path((field, value)): Path<(String, String)>) -> Response {
        match session.insert(&field, value).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => error(e),
        }
    }

    async fn slow(
        session: Session,
        State(state): State<AppState>,
        Path((field, value)): Path<(String, String)>,
    ) -> Response {
        // tower-sessions loads lazily: this read is the load.
        if let Err(e) = session.get_value("user").await {
            return error(e);
        }
        state.gate.pass().await;
        set(session, Path((field, value))).await
    }

    async fn fields(session: Session, Path(n): Path<usize>) -> Response {
        let mut values = Vec::new();
        for i in 0..n {
            let name = format!("f{i}");
            match session.get_value(&name).await {
                Ok(v) => values.push((name, v)),
                Err(e) => return error(e),
            }
        }
        let mut values = values.into_iter();
        Json(present(n, |name| {
            values.find(|(k, _)| k == name).and_then(|(_, v)| v)
        }))
        .into_response()
    }

    async fn renew(session: Session) -> Response {
        match session.cycle_id().await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => error(e),
        }
    }

    async fn logout(session: Session) -> Response {
        match session.flush().await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => error(e),
        }
    }

    async fn logout_all(session: Session, State(state): State<AppState>) -> Response {
        let user = match session.get::<String>("user").await {
            Ok(Some(user)) => user,
            Ok(None) => return StatusCode::UNAUTHORIZED.into_response(),
            Err(e) => return error(e),
        };
        match state.store.end_all(&user).await {
            Ok(n) => match session.flush().await {
                Ok(()) => Json(json!({"ended": n})).into_response(),
                Err(e) => error(e),
            },
            Err(e) => error(e),
        }
    }
}
