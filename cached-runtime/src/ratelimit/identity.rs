//! Who a request comes from: the peer address, or, behind proxies the limiter is told to
//! trust, the first address of the forwarded chain that is not one of them, read from the
//! right. The leftmost entry is whatever the client wrote, and is never trusted for that.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use ipnet::IpNet;

use crate::error::CacheError;

/// The request header that carries the chain of forwarded addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// The proxies whose forwarded headers a limiter believes, by network.
///
/// With none (the default) the client is the peer address and forwarded headers are ignored.
/// With some, a request from one of them is attributed to the first address of the forwarded
/// chain, read from the right (the nearest hop first), that is not a trusted proxy: each
/// trusted proxy appended the address it saw, so everything left of the first untrusted
/// address was written by the client itself and may be forged.
///
/// ```
/// use cached_runtime::ratelimit::{Client, TrustedProxies};
///
/// let proxies = TrustedProxies::new(["10.0.0.0/8", "192.0.2.1"])?;
/// // The client wrote "1.1.1.1" itself; the load balancer at 10.0.0.2 appended 203.0.113.9.
/// let client = proxies.client(
///     "10.0.0.2".parse().unwrap(),
///     ["1.1.1.1, 203.0.113.9"],
/// );
/// assert_eq!(client, Client::Addr("203.0.113.9".parse().unwrap()));
/// # Ok::<(), cached_runtime::CacheError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedProxies")
            .field(
                "nets",
                &self
                    .nets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .field("header", &self.header)
            .finish()
    }
}

/// A request's client as a limiter keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// An address.
    Addr(IpAddr),
    /// A forwarded entry that is no address (`unknown`, an obfuscated `_node`), as a trusted
    /// proxy wrote it: such clients share its limit.
    Token(String),
    /// No peer address is known (a test request, a Unix socket).
    Unknown,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(ip) => write!(f, "{ip}"),
            Self::Token(t) => write!(f, "~{t}"),
            Self::Unknown => f.write_str("~unknown"),
        }
    }
}

impl Client {
    /// The client as a limiter keys it (its [`Display`](fmt::Display)), written without the
    /// formatter: the middleware makes one per request.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Addr(IpAddr::V4(ip)) => {
                let mut out = String::with_capacity(15);
                let mut digits = itoa::Buffer::new();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(digits.format(octet));
                }
                out
            }
            other => other.to_string(),
        }
    }
}

/// The longest forwarded entry kept as a [`Client::Token`].
const MAX_TOKEN: usize = 64;

impl TrustedProxies {
    /// None: every request is its peer's.
    pub fn none() -> Self {
        Self::default()
    }

    /// Proxies by network (`10.0.0.0/8`, `2001:db8::/32`) or address (`192.0.2.1`).
    pub fn new<I>(networks: I) -> Result<Self, CacheError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nets = networks
            .into_iter()
            .map(|n| {
                let n = n.as_ref().trim();
                IpNet::from_str(n)
                    .or_else(|_| IpAddr::from_str(n).map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        CacheError::Config(format!(
                            "trusted proxy {n:?} is neither an address nor a network like 10.0.0.0/8"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads the chain from `header` instead of `X-Forwarded-For`.
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The header the chain is read from.
    pub fn forwarded_header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer` whose forwarded header had `values` (each line of
    /// it, in order). Forwarded headers are read only when `peer` is a trusted proxy.
    pub fn client<'a, V>(&self, peer: IpAddr, values: V) -> Client
    where
        V: IntoIterator<Item = &'a str>,
    {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return Client::Addr(peer);
        }
        let entries: Vec<&str> = values
            .into_iter()
            .flat_map(|line| line.split(','))
            .collect();
        let mut nearest = Client::Addr(peer);
        for entry in entries.iter().rev() {
            let hop = match self.header {
                ForwardedHeader::XForwardedFor => Some(entry.trim()),
                ForwardedHeader::Forwarded => forwarded_for(entry),
            };
            let Some(hop) = hop.filter(|h| !h.is_empty()) else {
                // An element without `for=`: it says nothing about this hop.
                continue;
            };
            match parse_hop(hop) {
                Some(ip) if self.is_trusted(ip) => nearest = Client::Addr(ip),
                Some(ip) => return Client::Addr(ip),
                None => return Client::Token(hop.chars().take(MAX_TOKEN).collect()),
            }
        }
        // Every hop is a trusted proxy: the request started at the leftmost of them.
        nearest
    }

    /// [`client`](Self::client) for a peer that may be unknown.
    pub fn client_of<'a, V>(&self, peer: Option<SocketAddr>, values: V) -> Client
    where
        V: IntoIterator<Item = &'a str>,
    {
        match peer {
            Some(peer) => self.client(peer.ip(), values),
            None => Client::Unknown,
        }
    }
}

/// An IPv4 address arriving as IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The `for` parameter of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address with or without a port: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(canonical(ip));
    }
    if let Ok(addr) = SocketAddr::from_str(hop) {
        return Some(canonical(addr.ip()));
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    IpAddr::from_str(bracketed).ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_clients_key_is_its_display() {
        for client in [
            Client::Addr(ip("198.51.100.7")),
            Client::Addr(ip("0.0.0.0")),
            Client::Addr(ip("255.255.255.255")),
            Client::Addr(ip("2001:db8::1")),
            Client::Token("_hidden".to_owned()),
            Client::Unknown,
        ] {
            assert_eq!(client.key(), client.to_string());
        }
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let none = TrustedProxies::none();
        assert_eq!(
            none.client(ip("198.51.100.7"), ["1.2.3.4"]),
            Client::Addr(ip("198.51.100.7"))
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_speak_for_others() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        assert_eq!(
            proxies.client(ip("198.51.100.7"), ["10.0.0.1"]),
            Client::Addr(ip("198.51.100.7"))
        );
    }

    #[test]
    fn the_chain_is_read_from_the_right_and_spoofed_entries_on_the_left_are_ignored() {
        let proxies = TrustedProxies::new(["10.0.0.0/8", "192.0.2.1"]).expect("valid");
        // Client 203.0.113.9 sent a forged "6.6.6.6, 10.9.9.9"; two trusted proxies appended.
        let chain = ["6.6.6.6, 10.9.9.9, 203.0.113.9", "192.0.2.1"];
        assert_eq!(
            proxies.client(ip("10.0.0.2"), chain),
            Client::Addr(ip("203.0.113.9"))
        );
        // Ports and brackets are accepted.
        assert_eq!(
            proxies.client(ip("10.0.0.2"), ["203.0.113.9:4711"]),
            Client::Addr(ip("203.0.113.9"))
        );
        assert_eq!(
            proxies.client(ip("10.0.0.2"), ["[2001:db8::7]:443"]),
            Client::Addr(ip("2001:db8::7"))
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_only_is_attributed_to_its_leftmost() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        assert_eq!(
            proxies.client(ip("10.0.0.2"), ["10.0.0.5, 10.0.0.4"]),
            Client::Addr(ip("10.0.0.5"))
        );
        assert_eq!(
            proxies.client(ip("10.0.0.2"), std::iter::empty()),
            Client::Addr(ip("10.0.0.2"))
        );
    }

    #[test]
    fn forwarded_elements_are_read_by_their_for_parameter() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"])
            .expect("valid")
            .header(ForwardedHeader::Forwarded);
        let header =
            r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9;by=10.0.0.2"#;
        assert_eq!(
            proxies.client(ip("10.0.0.2"), [header]),
            Client::Addr(ip("2001:db8:cafe::17"))
        );
    }

    #[test]
    fn a_hop_that_is_no_address_is_a_token_and_mapped_addresses_are_ipv4() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.2"), ["1.1.1.1, unknown"]),
            Client::Token("unknown".to_owned())
        );
        assert!(TrustedProxies::new(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::new(["proxy.local"]).is_err());
    }
}
