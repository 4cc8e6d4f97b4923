//! Framework glue: what Actix and axum handlers need beyond cache-aside (HTTP revalidation,
//! response shapes, extractor keys, vary sources, responders), one file per framework.

#[cfg(feature = "actix")]
pub(crate) mod actix;
#[cfg(feature = "axum")]
pub(crate) mod axum;
pub(crate) mod extract;
pub mod http;

pub mod shape {
    //! How a cached function's return type maps to stored entries, and how the macro picks that
    //! mapping from the return type's traits (not its name).
    //!
    //! Four shapes cover the outer type: [`Plain`] (`T`), [`Optional`] (`Option<T>`),
    //! [`Fallible`] (`Result<T, E>`) and [`FallibleOptional`] (`Result<Option<T>, E>`). Each takes
    //! an [`Adapter`] for what is inside: [`Identity`] stores the value itself; a web framework's
    //! response wrapper (Actix's `web::Json<T>`, axum's `Json<T>`) gets one small adapter that
    //! stores the `T` it wraps. Calling [`Cache::get_or_fill`](crate::Cache::get_or_fill) directly, you pick the
    //! shape yourself; the macro selects it from the return type, or takes `shape = …`.

    #[cfg(feature = "actix")]
    pub use super::actix::{ActixJson, FallibleJson, FallibleOptionalJson, Json, OptionalJson};
    #[cfg(feature = "axum")]
    pub use super::axum::AxumJson;
    pub use crate::cache::shape::*;
}
