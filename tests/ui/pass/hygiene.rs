//! Generated code names everything by absolute path, its locals cannot clash with the user's,
//! and it is clean under `deny(warnings, clippy::all)`.

#![deny(warnings, clippy::all)]
#![allow(dead_code)]

mod core {}
mod std {}
mod cached_runtime {}
mod serde {}

struct Policy;
struct Call;
struct Returns;

#[derive(::serde::Serialize, ::serde::Deserialize)]
struct Item {
    id: u64,
}

#[::cached_runtime::redis_cache(
    prefix = "hygiene",
    ttl = 60,
    null_ttl = 5,
    key = "{id}:{__cached_call}"
)]
async fn clash(id: u64, __cached_call: u64) -> ::core::option::Option<Item> {
    static __CACHED_POLICY: u64 = 1;
    let _ = (Policy, Call, Returns);
    ::core::option::Option::Some(Item {
        id: id + __cached_call + __CACHED_POLICY,
    })
}

#[::cached_runtime::redis_cache(prefix = "hygiene.json", ttl = ::core::time::Duration::from_secs(5))]
async fn json(id: ::actix_web::web::Path<u64>) -> ::actix_web::web::Json<Item> {
    ::actix_web::web::Json(Item { id: *id })
}

#[::cached_runtime::redis_cache(prefix = "hygiene.result", ttl = 60)]
async fn result(
    name: &str,
) -> ::core::result::Result<::std::string::String, ::std::string::String> {
    ::core::result::Result::Ok(::std::string::ToString::to_string(name))
}

fn main() {
    let _ = (clash, json, result);
}
