//! Keying on request headers: `#[redis_cache(vary(req = ["authorization"]))]` reads the named
//! headers from the argument `req` and puts a hash of them into the key, so a handler that
//! reads the caller's identity from a header never serves one caller's entry to another.
//!
//! The values are hashed (SHA-256, first 128 bits, hex) rather than written into the key:
//! credentials never reach Redis, and the key stays bounded. An absent header, an empty one
//! and a repeated one all hash differently.

use sha2::{Digest, Sha256};

/// Where `vary` reads headers from: a request, its parts, or its header map.
#[diagnostic::on_unimplemented(
    message = "`vary` reads headers from a request or its header map, and `{Self}` is neither",
    label = "named in `vary(...)`",
    note = "name an argument of type `HttpRequest` (Actix), `HeaderMap`, `Request` or `request::Parts` (axum)"
)]
pub trait VarySource {
    /// Calls `each` with every value of header `name`, in order.
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8]));
}

impl<T: VarySource + ?Sized> VarySource for &T {
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        (**self).header_values(name, each);
    }
}

/// The key segment for `headers` of `source`: 32 hex digits.
pub(crate) fn segment(source: &(impl VarySource + ?Sized), headers: &[&str]) -> String {
    let mut hash = Sha256::new();
    for name in headers {
        // Length-prefixed, so no two lists of names and values feed the same bytes.
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        source.header_values(name, &mut |value| {
            hash.update([1]);
            hash.update((value.len() as u64).to_be_bytes());
            hash.update(value);
        });
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why `name` cannot be a header name in `vary`, or `None` when it can. The macro checks every
/// name with it at compile time.
pub(crate) const fn header_name_error(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Some("empty header name in `vary`: name a request header, like \"authorization\"");
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // RFC 9110 `tchar`, lowercase: headers are matched without regard to case, and one
        // spelling keeps the `Vary` response header and the key the same for every caller.
        let tchar = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        if !tchar {
            return Some(if b.is_ascii_uppercase() {
                "header names in `vary` are written in lowercase, like \"accept-language\""
            } else {
                "not a header name in `vary`: use letters, digits and `-`, like \"accept-language\""
            });
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Headers(Vec<(&'static str, &'static [u8])>);

    impl VarySource for Headers {
        fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
            for (n, v) in &self.0 {
                if *n == name {
                    each(v);
                }
            }
        }
    }

    #[test]
    fn absent_empty_and_repeated_headers_hash_apart() {
        let names = ["authorization", "accept-language"];
        let cases = [
            Headers(vec![]),
            Headers(vec![("authorization", b"")]),
            Headers(vec![("authorization", b""), ("authorization", b"")]),
            Headers(vec![("authorization", b"a")]),
            Headers(vec![("accept-language", b"a")]),
            Headers(vec![("authorization", b"a"), ("accept-language", b"b")]),
            Headers(vec![("authorization", b"ab")]),
        ];
        let segments: Vec<String> = cases.iter().map(|h| segment(h, &names)).collect();
        for (i, a) in segments.iter().enumerate() {
            assert_eq!(a.len(), 32);
            assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
            for b in &segments[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The same headers give the same segment: stable across calls and processes.
        assert_eq!(segment(&cases[5], &names), segments[5]);
    }

    #[test]
    fn header_names_are_lowercase_tokens() {
        assert_eq!(header_name_error("accept-language"), None);
        assert_eq!(header_name_error("x-tenant_id.v2"), None);
        assert!(header_name_error("").is_some());
        assert!(header_name_error("Authorization").is_some_and(|m| m.contains("lowercase")));
        for bad in ["a b", "a:b", "é", "a\n"] {
            assert!(header_name_error(bad).is_some(), "{bad:?}");
        }
    }
}
