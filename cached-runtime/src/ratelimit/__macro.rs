//! What `#[rate_limit]` expands to calls. Not a public API: it changes with the macro.

use std::{future::Future, net::SocketAddr, sync::Arc};

pub use super::respond::LimitResponse;
use super::{RateLimiter, TrustedProxies};

/// What `limiter = …` may be: a limiter, or anything that holds one.
#[diagnostic::on_unimplemented(
    message = "`limiter = …` must be a `RateLimiter` (or `&`, `Arc` of one), not `{Self}`"
)]
pub trait AsLimiter {
    /// The limiter.
    fn as_limiter(&self) -> &RateLimiter;
}

impl AsLimiter for RateLimiter {
    fn as_limiter(&self) -> &RateLimiter {
        self
    }
}

impl<T: AsLimiter + ?Sized> AsLimiter for &T {
    fn as_limiter(&self) -> &RateLimiter {
        (**self).as_limiter()
    }
}

impl<T: AsLimiter + ?Sized> AsLimiter for Arc<T> {
    fn as_limiter(&self) -> &RateLimiter {
        (**self).as_limiter()
    }
}

#[cfg(feature = "actix")]
impl<T: AsLimiter + ?Sized> AsLimiter for actix_web::web::Data<T> {
    fn as_limiter(&self) -> &RateLimiter {
        (**self).as_limiter()
    }
}

/// The limiter of `limiter = …`.
pub fn limiter<L: AsLimiter + ?Sized>(limiter: &L) -> &RateLimiter {
    limiter.as_limiter()
}

/// The client key of `key = …`.
pub fn key<K: ToString + ?Sized>(key: &K) -> String {
    key.to_string()
}

/// The cost of `cost = …`.
pub const fn cost(cost: u64) -> u64 {
    cost
}

/// Pins an `async` block's output to the function's return type, so `?` and inference errors
/// in the body are about that type.
pub fn pin_output<R, F: Future<Output = R>>(body: F) -> F {
    body
}

/// An argument the peer address comes from.
#[diagnostic::on_unimplemented(
    message = "#[rate_limit] cannot read the peer address from `{Self}`"
)]
pub trait PeerSource {
    /// The peer address, when known.
    fn peer_addr(&self) -> Option<SocketAddr>;
}

/// An argument the forwarded headers come from.
#[diagnostic::on_unimplemented(message = "#[rate_limit] cannot read headers from `{Self}`")]
pub trait HeaderSource {
    /// Each line of header `name`, in order.
    fn lines<'a>(&'a self, name: &str) -> Vec<&'a str>;
}

/// The peer address of a request argument.
pub fn peer<P: PeerSource + ?Sized>(source: &P) -> Option<SocketAddr> {
    source.peer_addr()
}

/// A header argument, for [`client`].
pub fn headers<H: HeaderSource>(source: &H) -> &dyn HeaderSource {
    source
}

/// The client key of a request from `peer` with `headers`, as `limiter` identifies it.
pub fn client(
    limiter: &RateLimiter,
    peer: Option<SocketAddr>,
    headers: Option<&dyn HeaderSource>,
) -> String {
    let proxies: &TrustedProxies = limiter.proxies();
    let lines = headers.map_or_else(Vec::new, |h| h.lines(proxies.forwarded_header().name()));
    limiter.client(peer, lines).key()
}

#[cfg(feature = "actix")]
mod actix_sources {
    use std::net::SocketAddr;

    use actix_web::HttpRequest;

    use super::{HeaderSource, PeerSource};

    impl PeerSource for HttpRequest {
        fn peer_addr(&self) -> Option<SocketAddr> {
            HttpRequest::peer_addr(self)
        }
    }

    impl HeaderSource for HttpRequest {
        fn lines<'a>(&'a self, name: &str) -> Vec<&'a str> {
            self.headers()
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .collect()
        }
    }
}

#[cfg(feature = "axum")]
mod axum_sources {
    use std::net::SocketAddr;

    use axum::{extract::ConnectInfo, http::HeaderMap};

    use super::{HeaderSource, PeerSource};

    impl PeerSource for ConnectInfo<SocketAddr> {
        fn peer_addr(&self) -> Option<SocketAddr> {
            Some(self.0)
        }
    }

    impl HeaderSource for HeaderMap {
        fn lines<'a>(&'a self, name: &str) -> Vec<&'a str> {
            self.get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        }
    }
}
