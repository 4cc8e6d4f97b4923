//! Actix Web: `web::Json<T>` responses stored as their `T`, the extractors keyed on the value
//! they hold, the request context that cannot be keyed, `vary` on a request or its headers,
//! `cache = web::Data<Cache>`, and the revalidating responder.

use std::future::{Ready, ready};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, Responder,
    body::{BoxBody, EitherBody},
    dev::Payload,
    http::{
        Method, StatusCode,
        header::{self, HeaderName, HeaderValue},
    },
    web,
};

use crate::{
    cache::{
        Cache as CacheHandle,
        handle::AsCache,
        shape::{Adapter, Fallible, FallibleOptional, Optional, Plain, framework_wrapper},
        vary::VarySource,
    },
    web::{
        extract::{context, extractor, risky},
        http::{Answer, Conditional, Revalidated, json_response},
    },
};

/// Stores the `T` of an `actix_web::web::Json<T>`.
#[derive(Debug)]
pub struct ActixJson;

impl<T> Adapter<web::Json<T>> for ActixJson {
    type Value = T;
    fn value(wrapper: &web::Json<T>) -> &T {
        &wrapper.0
    }
    fn wrap(value: T) -> web::Json<T> {
        web::Json(value)
    }
}

framework_wrapper!(web::Json, ActixJson);
json_response!(ActixJson);

/// `actix_web::web::Json<T>`: stored as `T`.
pub type Json = Plain<ActixJson>;
/// `Result<actix_web::web::Json<T>, E>`: `Ok` stored as `T`, `Err` never.
pub type FallibleJson = Fallible<ActixJson>;
/// `Option<actix_web::web::Json<T>>` (Actix answers `None` with 404): `None` is stored as the
/// null marker.
pub type OptionalJson = Optional<ActixJson>;
/// `Result<Option<actix_web::web::Json<T>>, E>`: `Ok(None)` is stored as the null marker,
/// `Err` never.
pub type FallibleOptionalJson = FallibleOptional<ActixJson>;

extractor!(actix_web::web::Path<T>);
extractor!(actix_web::web::Query<T>);
extractor!(actix_web::web::Json<T>);
extractor!(actix_web::web::Form<T>);

context!(SharedState: actix_web::web::Data<T>);
context!(WholeRequest: actix_web::HttpRequest);
context!(WholeRequest: actix_web::http::header::HeaderMap);

risky!(actix_web::HttpRequest);
risky!(actix_web::http::header::HeaderMap);

impl VarySource for actix_web::HttpRequest {
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        self.headers().header_values(name, each);
    }
}

impl VarySource for actix_web::http::header::HeaderMap {
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for value in self.get_all(name) {
            each(value.as_bytes());
        }
    }
}

impl AsCache for actix_web::web::Data<CacheHandle> {
    fn as_cache(&self) -> &CacheHandle {
        self
    }
}

impl FromRequest for Conditional {
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        ready(Ok(Conditional::new(
            req.method() == Method::GET || req.method() == Method::HEAD,
            headers
                .get_all(header::IF_NONE_MATCH)
                .map(HeaderValue::as_bytes),
            headers
                .get_all(header::CACHE_CONTROL)
                .map(HeaderValue::as_bytes),
        )))
    }
}

impl<R: Responder> Responder for Revalidated<R> {
    type Body = EitherBody<R::Body, BoxBody>;

    fn respond_to(self, req: &HttpRequest) -> HttpResponse<Self::Body> {
        let headers: Vec<(&'static str, String)> = self.headers().collect();
        let mut response = match self.answer {
            Answer::Result(result) => result.respond_to(req).map_into_left_body(),
            Answer::Stored(value) => {
                let body = value.into_body();
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body)
                    .map_into_right_body()
            }
            Answer::NotModified(_) => HttpResponse::build(StatusCode::NOT_MODIFIED)
                .finish()
                .map_into_right_body(),
        };
        let map = response.headers_mut();
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                map.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}
