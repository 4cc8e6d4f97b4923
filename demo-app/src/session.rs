//! Sessions: sign in as the demo user, `GET /me`, a small cart kept in the session, sign out
//! here or everywhere. actix-session's own API, on a store over the cache's Redis connection
//! (`cached_runtime::session::Sessions`): Cluster, Sentinel, the breaker and metrics included.
//!
//! | route | what it does |
//! |---|---|
//! | `POST /login` | `{"user": "demo", "password": "demo"}`: a new session id, signed in |
//! | `GET /me` | `{"user": …, "cart": […]}`, or `401` |
//! | `GET /cart`, `POST /cart` | the cart; `{"item": 3}` adds an item (signed in or not) |
//! | `POST /logout` | ends this session |
//! | `POST /logout-everywhere` | ends every session of the signed-in user |

use actix_session::{Session, SessionMiddleware};
use actix_web::{HttpResponse, cookie::Key, get, post, web};
use cached_runtime::{
    Cache,
    session::{OnUnavailable, Sessions},
};
use serde::Deserialize;
use serde_json::json;

use crate::error::StartError;

/// The one account of the demo.
pub const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo";
/// The most items a cart holds.
const CART_LIMIT: usize = 50;

/// What the session routes need: the store and the cookie key.
#[derive(Clone)]
pub struct SessionDemo {
    store: Sessions,
    key: Key,
}

impl std::fmt::Debug for SessionDemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SessionDemo")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SessionDemo {
    /// A store on the cache's connection. A request whose session Redis cannot load goes on
    /// signed out (its changes unsaved) instead of failing: the catalog works without Redis.
    pub fn build(cache: &Cache) -> Result<Self, StartError> {
        let redis = cache
            .connection()
            .ok_or_else(|| StartError::Config("sessions need the cache on Redis".into()))?;
        let store = Sessions::builder(redis)
            .prefix("demo:session:")
            .user_field("user")
            .on_unavailable(OnUnavailable::Fresh)
            .build()?;
        // A key per process: sessions end with it (load a fixed key in production).
        Ok(Self {
            store,
            key: Key::generate(),
        })
    }
}

/// Registers the session routes behind actix-session's middleware (only these routes load
/// sessions).
pub fn configure(cfg: &mut web::ServiceConfig, demo: &SessionDemo) {
    let middleware = SessionMiddleware::builder(demo.store.clone(), demo.key.clone())
        // The demo serves plain HTTP on loopback; behind TLS keep the default (`Secure`).
        .cookie_secure(false)
        .build();
    cfg.service(
        web::scope("")
            .wrap(middleware)
            .app_data(web::Data::new(demo.store.clone()))
            .service(login)
            .service(me)
            .service(cart)
            .service(add_to_cart)
            .service(logout)
            .service(logout_everywhere),
    );
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

#[derive(Deserialize)]
struct CartItem {
    item: u64,
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::warn!(error = %e, "session route failed");
    HttpResponse::InternalServerError().json(json!({"error": "session unavailable"}))
}

fn signed_out() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({"error": "not signed in"}))
}

fn cart_of(session: &Session) -> Vec<u64> {
    session.get("cart").ok().flatten().unwrap_or_default()
}

#[post("/login")]
async fn login(session: Session, body: web::Json<Login>) -> HttpResponse {
    if body.user != DEMO_USER || body.password != DEMO_PASSWORD {
        return HttpResponse::Unauthorized().json(json!({"error": "unknown user or password"}));
    }
    // A privilege change: a new id, the cart kept.
    session.renew();
    match session.insert("user", &body.user) {
        Ok(()) => HttpResponse::Ok().json(json!({"user": body.user})),
        Err(e) => internal(e),
    }
}

#[get("/me")]
async fn me(session: Session) -> HttpResponse {
    match session.get::<String>("user") {
        Ok(Some(user)) => HttpResponse::Ok().json(json!({"user": user, "cart": cart_of(&session)})),
        Ok(None) => signed_out(),
        Err(e) => internal(e),
    }
}

#[get("/cart")]
async fn cart(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(json!({"items": cart_of(&session)}))
}

#[post("/cart")]
async fn add_to_cart(session: Session, body: web::Json<CartItem>) -> HttpResponse {
    let mut items = cart_of(&session);
    if items.len() >= CART_LIMIT {
        return HttpResponse::UnprocessableEntity().json(json!({"error": "the cart is full"}));
    }
    items.push(body.item);
    match session.insert("cart", &items) {
        Ok(()) => HttpResponse::Ok().json(json!({"items": items})),
        Err(e) => internal(e),
    }
}

#[post("/logout")]
async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({"signed_out": true}))
}

#[post("/logout-everywhere")]
async fn logout_everywhere(session: Session, store: web::Data<Sessions>) -> HttpResponse {
    let user = match session.get::<String>("user") {
        Ok(Some(user)) => user,
        Ok(None) => return signed_out(),
        Err(e) => return internal(e),
    };
    match store.end_all(&user).await {
        Ok(ended) => {
            session.purge();
            HttpResponse::Ok().json(json!({"ended": ended}))
        }
        Err(e) => internal(e),
    }
}
