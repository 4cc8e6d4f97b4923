//! The HTTP reference for the demo's warm item read: a handler that returns the same JSON
//! bytes from a constant, with `Content-Type: application/json`, on the same path, as the
//! `http` section of the workspace's cache bench does it, in a process of its own.
//!
//! `BIND=127.0.0.1:8081 BODY_FILE=item.json constant` (BODY_FILE: the demo's response body,
//! e.g. `curl -s http://demo/items/1 > item.json`; PATH_TO_SERVE defaults to `/items/1`).

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let path = std::env::var("PATH_TO_SERVE").unwrap_or_else(|_| "/items/1".into());
    let body: web::Bytes = std::fs::read(std::env::var("BODY_FILE").expect("BODY_FILE"))?.into();
    HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            &path,
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .bind(bind)?
    .run()
    .await
}
