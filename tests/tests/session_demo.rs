//! The demos' session routes over real HTTP, with a cookie jar per browser: sign in as the
//! demo user, `GET /me`, the cart, sign out, and sign out everywhere, on the Actix demo and
//! on the axum demo.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{
    GENEROUS_TIMEOUT,
    fixtures::demo::{ActixDemo, AxumDemo},
};

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .timeout(GENEROUS_TIMEOUT)
        .build()
        .expect("an http client")
}

async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the demo answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The whole flow against the demo at `base`.
async fn sessions_flow(base: &str) {
    let url = |path: &str| format!("{base}{path}");
    let (laptop, phone) = (browser(), browser());
    assert_eq!(
        call(laptop.get(url("/me"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let wrong = json!({"user": "demo", "password": "nope"});
    assert_eq!(
        call(laptop.post(url("/login")).json(&wrong)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A cart before signing in survives the sign-in (and its new id).
    let added = call(laptop.post(url("/cart")).json(&json!({"item": 3}))).await;
    assert_eq!(added, (StatusCode::OK, json!({"items": [3]})));
    let demo = json!({"user": "demo", "password": "demo"});
    assert_eq!(
        call(laptop.post(url("/login")).json(&demo)).await,
        (StatusCode::OK, json!({"user": "demo"}))
    );
    let added = call(laptop.post(url("/cart")).json(&json!({"item": 7}))).await;
    assert_eq!(added, (StatusCode::OK, json!({"items": [3, 7]})));
    assert_eq!(
        call(laptop.get(url("/me"))).await,
        (StatusCode::OK, json!({"user": "demo", "cart": [3, 7]}))
    );
    // Signing out ends this session only.
    assert_eq!(
        call(phone.post(url("/login")).json(&demo)).await.0,
        StatusCode::OK
    );
    assert_eq!(call(phone.post(url("/logout"))).await.0, StatusCode::OK);
    assert_eq!(
        call(phone.get(url("/me"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(laptop.get(url("/me"))).await.0, StatusCode::OK);
    // Signing out everywhere ends the others too.
    assert_eq!(
        call(phone.post(url("/login")).json(&demo)).await.0,
        StatusCode::OK
    );
    let (status, body) = call(phone.post(url("/logout-everywhere"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ended"], 2, "{body}");
    assert_eq!(
        call(laptop.get(url("/me"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(phone.get(url("/me"))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_actix_demo_signs_in_keeps_a_cart_and_signs_out_everywhere() {
    let demo = ActixDemo::start(|_| ()).await;
    sessions_flow(&demo.base).await;
    demo.stop().await;
}

#[tokio::test]
async fn the_axum_demo_signs_in_keeps_a_cart_and_signs_out_everywhere() {
    let demo = AxumDemo::start(|_| ()).await;
    sessions_flow(&demo.base).await;
    demo.stop().await;
}
