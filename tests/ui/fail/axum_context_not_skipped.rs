use std::net::SocketAddr;

use axum::{
    Extension,
    extract::{ConnectInfo, Path},
};
use cached_runtime::redis_cache;

#[derive(Clone, serde::Serialize)]
struct Pool;

#[redis_cache(prefix = "a", ttl = 60)]
async fn extension(pool: Extension<Pool>, Path(id): Path<u64>) -> u64 {
    let _ = pool;
    id
}

#[redis_cache(prefix = "b", ttl = 60)]
async fn connect_info(peer: ConnectInfo<SocketAddr>, Path(id): Path<u64>) -> u64 {
    let _ = peer;
    id
}

fn main() {
    let _ = (extension, connect_info);
}
