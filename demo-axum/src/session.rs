//! Sessions: sign in as the demo user, `GET /me`, a small cart kept in the session, sign out
//! here or everywhere. tower-sessions' own API, on a store over the cache's Redis connection
//! (`cached_runtime::session::Sessions`): Cluster, Sentinel, the breaker and metrics included.
//!
//! | route | what it does |
//! |---|---|
//! | `POST /login` | `{"user": "demo", "password": "demo"}`: a new session id, signed in |
//! | `GET /me` | `{"user": …, "cart": […]}`, or `401` |
//! | `GET /cart`, `POST /cart` | the cart; `{"item": 3}` adds an item (signed in or not) |
//! | `POST /logout` | ends this session |
//! | `POST /logout-everywhere` | ends every session of the signed-in user |

use axum::{
    Extension, Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use cached_runtime::{
    Cache,
    session::{OnUnavailable, Sessions},
};
use serde::Deserialize;
use serde_json::json;
use tower_sessions::{Session, SessionManagerLayer};

use crate::routes::App;

/// The one account of the demo.
pub const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo";
/// The most items a cart holds.
const CART_LIMIT: usize = 50;

/// The session routes behind tower-sessions' layer (only these routes load sessions), on the
/// cache's connection; none when the cache has no Redis.
pub fn router(cache: &Cache) -> Router<App> {
    let built = cache.connection().map(|redis| {
        Sessions::builder(redis)
            .prefix("demo:session:")
            .user_field("user")
            // A request whose session Redis cannot load goes on signed out (its changes
            // unsaved) instead of failing: the catalog works without Redis.
            .on_unavailable(OnUnavailable::Fresh)
            .build()
    });
    let store = match built {
        Some(Ok(store)) => store,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "sessions are off");
            return Router::new();
        }
        None => return Router::new(),
    };
    // The demo serves plain HTTP on loopback; behind TLS keep the default (`Secure`).
    let layer = SessionManagerLayer::new(store.clone()).with_secure(false);
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/cart", get(cart).post(add_to_cart))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(layer)
        .layer(Extension(store))
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

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "session route failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "session unavailable"})),
    )
        .into_response()
}

fn signed_out() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "not signed in"})),
    )
        .into_response()
}

async fn cart_of(session: &Session) -> Vec<u64> {
    session.get("cart").await.ok().flatten().unwrap_or_default()
}

async fn login(session: Session, Json(body): Json<Login>) -> Response {
    if body.user != DEMO_USER || body.password != DEMO_PASSWORD {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unknown user or password"})),
        )
            .into_response();
    }
    // A privilege change: a new id, the cart kept.
    if let Err(e) = session.cycle_id().await {
        return internal(e);
    }
    match session.insert("user", &body.user).await {
        Ok(()) => Json(json!({"user": body.user})).into_response(),
        Err(e) => internal(e),
    }
}

async fn me(session: Session) -> Response {
    match session.get::<String>("user").await {
        Ok(Some(user)) => {
            Json(json!({"user": user, "cart": cart_of(&session).await})).into_response()
        }
        Ok(None) => signed_out(),
        Err(e) => internal(e),
    }
}

async fn cart(session: Session) -> Response {
    Json(json!({"items": cart_of(&session).await})).into_response()
}

async fn add_to_cart(session: Session, Json(body): Json<CartItem>) -> Response {
    let mut items = cart_of(&session).await;
    if items.len() >= CART_LIMIT {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "the cart is full"})),
        )
            .into_response();
    }
    items.push(body.item);
    match session.insert("cart", &items).await {
        Ok(()) => Json(json!({"items": items})).into_response(),
        Err(e) => internal(e),
    }
}

async fn logout(session: Session) -> Response {
    match session.flush().await {
        Ok(()) => Json(json!({"signed_out": true})).into_response(),
        Err(e) => internal(e),
    }
}

async fn logout_everywhere(session: Session, Extension(store): Extension<Sessions>) -> Response {
    let user = match session.get::<String>("user").await {
        Ok(Some(user)) => user,
        Ok(None) => return signed_out(),
        Err(e) => return internal(e),
    };
    match store.end_all(&user).await {
        Ok(ended) => match session.flush().await {
            Ok(()) => Json(json!({"ended": ended})).into_response(),
            Err(e) => internal(e),
        },
        Err(e) => internal(e),
    }
}
