//! The stored form of a value: a short text header, then JSON.
//!
//! ```text
//! rc1:{version}:v:{json}                     a value
//! rc1:{version}:e:{etag}:{expires}:{json}    a value with its validator (`revalidate`)
//! rc1:{version}:n                            the null marker of an absent result
//! ```
//!
//! `rc1` names this format, `version` is the cached function's `version` option (0 unless
//! set). A function with `revalidate` stores its values with a validator: `etag` is 32
//! lowercase hex digits, the first 128 bits of the SHA-256 of `{json}`, computed once when the
//! entry is filled and the same in every process for the same value, so an HTTP revalidation
//! compares it without decoding anything; `expires` is when the entry expires, in Unix
//! seconds, for `Cache-Control: max-age`. Every function reads both kinds of value. Anything else under a cache key
//! (another format, another version, JSON of another shape, bytes from another program) is a
//! miss, and the fill that follows overwrites it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"rc1:";

/// Hex digits of an entity tag.
pub(crate) const ETAG_LEN: usize = 32;

/// A decoded entry.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded<T> {
    Value(T),
    Null,
}

/// Why a stored entry was not usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("not written by this library")]
    Foreign,
    #[error("written for version {found}, expected {expected}")]
    Version { found: u32, expected: u32 },
    #[error("value does not match the type")]
    Json(#[from] serde_json::Error),
}

/// An entry read without decoding its value.
#[derive(Debug, PartialEq)]
pub(crate) enum Raw<'a> {
    /// A value with its validator; `json` starts at `json_at` in the entry.
    Value {
        etag: &'a str,
        expires: u64,
        json_at: usize,
    },
    /// A value without a validator (not filled by a revalidating function).
    Unvalidated {
        json_at: usize,
    },
    Null,
}

pub(crate) fn encode_value<T: Serialize + ?Sized>(
    value: &T,
    version: u32,
) -> Result<Vec<u8>, serde_json::Error> {
    // Room for a typical small value: growing is a realloc and a copy on every fill.
    let mut buf = Vec::with_capacity(512);
    header(&mut buf, version, b'v');
    buf.push(b':');
    serde_json::to_writer(&mut buf, value)?;
    Ok(buf)
}

/// The stored form of `value` with its validator, valid for `ttl` seconds from now.
pub(crate) fn encode_validated<T: Serialize + ?Sized>(
    value: &T,
    version: u32,
    ttl: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::with_capacity(512);
    header(&mut buf, version, b'e');
    buf.push(b':');
    let etag_at = buf.len();
    buf.extend_from_slice(&[b'0'; ETAG_LEN]);
    buf.push(b':');
    push_decimal(&mut buf, unix_now().saturating_add(ttl));
    buf.push(b':');
    let json_at = buf.len();
    serde_json::to_writer(&mut buf, value)?;
    let tag = etag(&buf[json_at..]);
    buf[etag_at..etag_at + ETAG_LEN].copy_from_slice(&tag);
    Ok(buf)
}

/// The entity tag of `json`: the first 128 bits of its SHA-256, in lowercase hex.
pub(crate) fn etag(json: &[u8]) -> [u8; ETAG_LEN] {
    let digest = Sha256::digest(json);
    let mut tag = [0; ETAG_LEN];
    for (i, b) in digest[..ETAG_LEN / 2].iter().enumerate() {
        tag[2 * i] = HEX[usize::from(b >> 4)];
        tag[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    tag
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn encode_null(version: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    header(&mut buf, version, b'n');
    buf
}

fn header(buf: &mut Vec<u8>, version: u32, kind: u8) {
    buf.extend_from_slice(MAGIC);
    push_decimal(buf, version.into());
    buf.push(b':');
    buf.push(kind);
}

/// `n` in decimal: what `write!` produces, without the formatting machinery (a tenth of a
/// fill's own instructions went to formatting the version).
pub(crate) fn push_decimal(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(Decimal::new(n).as_bytes());
}

/// The decimal digits of a number, on the stack.
pub(crate) struct Decimal {
    digits: [u8; 20],
    at: usize,
}

impl Decimal {
    pub(crate) fn new(mut n: u64) -> Self {
        let mut digits = [0; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            // A digit: `n % 10` is below 10.
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, at }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[self.at..]
    }

    pub(crate) fn as_str(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch (0 on a clock set before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The kind and what follows it, after checking the magic and the version.
fn body(bytes: &[u8], version: u32) -> Result<&[u8], DecodeError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Foreign)?;
    let colon = rest
        .iter()
        .take(11)
        .position(|&b| b == b':')
        .ok_or(DecodeError::Foreign)?;
    let found = std::str::from_utf8(&rest[..colon])
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or(DecodeError::Foreign)?;
    if found != version {
        return Err(DecodeError::Version {
            found,
            expected: version,
        });
    }
    Ok(&rest[colon + 1..])
}

/// Reads an entry's header only: what an HTTP revalidation needs, with no JSON decoded.
pub(crate) fn raw(bytes: &[u8], version: u32) -> Result<Raw<'_>, DecodeError> {
    let body = body(bytes, version)?;
    match body {
        [b'n'] => Ok(Raw::Null),
        [b'v', b':', ..] => Ok(Raw::Unvalidated {
            json_at: bytes.len() - body.len() + 2,
        }),
        [b'e', b':', rest @ ..] => {
            let (etag, rest) = rest
                .split_at_checked(ETAG_LEN)
                .ok_or(DecodeError::Foreign)?;
            // A range check, not a search of `HEX`: this runs on every revalidating hit.
            if !etag.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(DecodeError::Foreign);
            }
            let etag = std::str::from_utf8(etag).map_err(|_| DecodeError::Foreign)?;
            let rest = rest.strip_prefix(b":").ok_or(DecodeError::Foreign)?;
            let digits = rest
                .iter()
                .take(21)
                .position(|&b| b == b':')
                .ok_or(DecodeError::Foreign)?;
            let expires = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(DecodeError::Foreign)?;
            Ok(Raw::Value {
                etag,
                expires,
                json_at: bytes.len() - rest.len() + digits + 1,
            })
        }
        _ => Err(DecodeError::Foreign),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    version: u32,
) -> Result<Decoded<T>, DecodeError> {
    match raw(bytes, version)? {
        Raw::Null => Ok(Decoded::Null),
        Raw::Value { json_at, .. } | Raw::Unvalidated { json_at } => {
            Ok(Decoded::Value(serde_json::from_slice(&bytes[json_at..])?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 42, 4_294_967_295, u64::MAX] {
            let mut buf = b"x".to_vec();
            push_decimal(&mut buf, n);
            assert_eq!(buf, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn values_and_null_markers_round_trip_and_never_mix() {
        let v = encode_value(&Some(5u32), 3).expect("encodes");
        assert_eq!(v, b"rc1:3:v:5");
        assert_eq!(
            decode::<Option<u32>>(&v, 3).expect("decodes"),
            Decoded::Value(Some(5))
        );
        let n = encode_null(3);
        assert_eq!(n, b"rc1:3:n");
        assert_eq!(
            decode::<Option<u32>>(&n, 3).expect("decodes"),
            Decoded::Null
        );
        // A JSON null value is a value, not the marker.
        let jnull = encode_value(&None::<u32>, 3).expect("encodes");
        assert_eq!(
            decode::<Option<u32>>(&jnull, 3).expect("decodes"),
            Decoded::Value(None)
        );
        // Values with a validator decode the same.
        let e = encode_validated(&Some(5u32), 3, 60).expect("encodes");
        assert!(e.starts_with(b"rc1:3:e:") && e.ends_with(b":5"));
        assert_eq!(
            decode::<Option<u32>>(&e, 3).expect("decodes"),
            Decoded::Value(Some(5))
        );
    }

    #[test]
    fn the_validator_is_the_hash_of_the_json_and_the_expiry_is_absolute() {
        let before = unix_now();
        let v = encode_validated(&("a", 1), 0, 600).expect("encodes");
        let Raw::Value {
            etag,
            expires,
            json_at,
        } = raw(&v, 0).expect("a value")
        else {
            panic!("expected a value");
        };
        assert_eq!(&v[json_at..], br#"["a",1]"#);
        let digest = Sha256::digest(br#"["a",1]"#);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(etag, hex);
        assert!((before + 600..=unix_now() + 600).contains(&expires));
        // The same value, written later or by another process, has the same tag.
        let again = encode_validated(&("a", 1), 0, 5).expect("encodes");
        assert!(matches!(raw(&again, 0), Ok(Raw::Value { etag: e, .. }) if e == hex));
        // A value without a validator gets the same tag from its JSON.
        let plain = encode_value(&("a", 1), 0).expect("encodes");
        assert_eq!(
            raw(&plain, 0).expect("a value"),
            Raw::Unvalidated { json_at: 8 }
        );
        assert_eq!(super::etag(&plain[8..]), hex.as_bytes());
        assert_eq!(raw(b"rc1:0:n", 0).expect("null"), Raw::Null);
    }

    #[test]
    fn foreign_and_stale_entries_are_rejected() {
        assert!(matches!(decode::<u32>(b"5", 0), Err(DecodeError::Foreign)));
        assert!(matches!(
            decode::<u32>(b"rc1:", 0),
            Err(DecodeError::Foreign)
        ));
        assert!(matches!(
            decode::<u32>(b"rc1:0:x", 0),
            Err(DecodeError::Foreign)
        ));
        assert!(matches!(
            decode::<u32>(b"rc1:0:n:", 0),
            Err(DecodeError::Foreign)
        ));
        assert!(matches!(
            decode::<u32>(b"rc1:1:v:5", 2),
            Err(DecodeError::Version {
                found: 1,
                expected: 2
            })
        ));
        assert!(matches!(
            decode::<u32>(b"rc1:0:v:\"x\"", 0),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode::<u32>(b"rc1:0:v:12", 0),
            Ok(Decoded::Value(12))
        ));
        for bad in [
            &b"rc1:0:e:"[..],
            b"rc1:0:e:0123:1:5",
            b"rc1:0:e:0123456789abcdef0123456789abcdeX:1:5",
            b"rc1:0:e:0123456789abcdef0123456789abcdef:x:5",
            b"rc1:0:e:0123456789abcdef0123456789abcdef:15",
        ] {
            assert!(raw(bad, 0).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Vec<String>>(&bytes, 0);
            let _ = decode::<u64>(&bytes, 0);
        }

        #[test]
        fn random_payloads_behind_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            for head in [&b"rc1:0:v:"[..], b"rc1:0:e:", b"rc1:0:e:0123456789abcdef0123456789abcdef:"] {
                let mut bytes = head.to_vec();
                bytes.extend_from_slice(&tail);
                let _ = decode::<std::collections::BTreeMap<String, Option<f64>>>(&bytes, 0);
                let _ = raw(&bytes, 0);
            }
        }
    }
}
