//! axum: `Json<T>` responses stored as their `T`, the extractors keyed on the value they hold,
//! the request context that cannot be keyed, `vary` on a request, its parts or its headers,
//! and the revalidating extractor and response.

use axum::{
    Json,
    extract::FromRequestParts,
    http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};

use crate::{
    cache::{
        shape::{Adapter, framework_wrapper},
        vary::VarySource,
    },
    web::{
        extract::{context, extractor, risky},
        http::{Answer, Conditional, Revalidated, json_response},
    },
};

/// Stores the `T` of an `axum::Json<T>`.
#[derive(Debug)]
pub struct AxumJson;

impl<T> Adapter<Json<T>> for AxumJson {
    type Value = T;
    fn value(wrapper: &Json<T>) -> &T {
        &wrapper.0
    }
    fn wrap(value: T) -> Json<T> {
        Json(value)
    }
}

framework_wrapper!(Json, AxumJson);
json_response!(AxumJson);

extractor!(axum::extract::Path<T>);
extractor!(axum::extract::Query<T>);
extractor!(axum::Json<T>);
extractor!(axum::Form<T>);

context!(SharedState: axum::extract::State<T>);
context!(SharedState: axum::Extension<T>);
context!(WholeRequest: axum::http::HeaderMap<T>);
context!(WholeRequest: axum::http::Request<B>);
context!(WholeRequest: axum::http::request::Parts);

risky!(axum::http::HeaderMap<T>);
risky!(axum::http::Request<B>);
risky!(axum::http::request::Parts);

impl VarySource for axum::http::HeaderMap {
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for value in self.get_all(name) {
            each(value.as_bytes());
        }
    }
}

impl<B> VarySource for axum::http::Request<B> {
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        self.headers().header_values(name, each);
    }
}

impl VarySource for axum::http::request::Parts {
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        self.headers.header_values(name, each);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Conditional {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Conditional::new(
            parts.method == Method::GET || parts.method == Method::HEAD,
            parts
                .headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .map(HeaderValue::as_bytes),
            parts
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .map(HeaderValue::as_bytes),
        ))
    }
}

impl<R: IntoResponse> IntoResponse for Revalidated<R> {
    fn into_response(self) -> Response {
        let headers: Vec<(&'static str, String)> = self.headers().collect();
        let mut response = match self.answer {
            Answer::Result(result) => result.into_response(),
            Answer::Stored(value) => {
                let body = value.into_body();
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response()
            }
            Answer::NotModified(_) => StatusCode::NOT_MODIFIED.into_response(),
        };
        let map = response.headers_mut();
        for (name, value) in headers {
            // Our values are visible ASCII: tags, directives, header names.
            if let Ok(value) = HeaderValue::try_from(value) {
                map.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}
