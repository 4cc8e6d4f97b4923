//! Framework glue: what Actix and axum handlers need beyond cache-aside (HTTP revalidation,
//! response shapes, extractor keys, vary sources, responders), one file per framework.

pub mod http;
