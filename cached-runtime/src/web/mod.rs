//! Framework glue: what Actix and axum handlers need beyond cache-aside (HTTP revalidation,
//! response shapes, extractor keys, vary sources, responders), one file per framework.

#[cfg(feature = "actix")]
pub(crate) mod actix;
#[cfg(feature = "axum")]
pub(crate) mod axum;
pub(crate) mod extract;
pub mod http;
