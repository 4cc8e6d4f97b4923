//! The stored form of a value: a short text header, then JSON.
//!
//! ```text
//! rc1:{version}:v:{json}    a value
//! rc1:{version}:n           the null marker of an absent result
//! ```
//!
//! `rc1` names this format, `version` is the cached function's `version` option (0 unless
//! set). Anything else under a cache key (another format, another version, JSON of another
//! shape, bytes from another program) is a miss, and the fill that follows overwrites it.

use std::io::Write as _;

use serde::{Serialize, de::DeserializeOwned};

const MAGIC: &[u8] = b"rc1:";

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

pub(crate) fn encode_value<T: Serialize + ?Sized>(
    value: &T,
    version: u32,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::with_capacity(128);
    header(&mut buf, version, b'v');
    buf.push(b':');
    serde_json::to_writer(&mut buf, value)?;
    Ok(buf)
}

pub(crate) fn encode_null(version: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    header(&mut buf, version, b'n');
    buf
}

fn header(buf: &mut Vec<u8>, version: u32, kind: u8) {
    buf.extend_from_slice(MAGIC);
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{version}:");
    buf.push(kind);
}

pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    version: u32,
) -> Result<Decoded<T>, DecodeError> {
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
    match &rest[colon + 1..] {
        [b'n'] => Ok(Decoded::Null),
        [b'v', b':', json @ ..] => Ok(Decoded::Value(serde_json::from_slice(json)?)),
        _ => Err(DecodeError::Foreign),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut bytes = b"rc1:0:v:".to_vec();
            bytes.extend_from_slice(&tail);
            let _ = decode::<std::collections::BTreeMap<String, Option<f64>>>(&bytes, 0);
        }
    }
}
