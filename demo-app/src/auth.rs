//! The admin endpoint's bearer token check.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use secrecy::ExposeSecret as _;

use crate::{app::AppState, error::ApiError};

/// Proof that the request carried `Authorization: Bearer <ADMIN_TOKEN>` (the scheme in any
/// case, as RFC 7235 has it).
///
/// As an extractor it runs before the body is parsed, so a caller without the token learns
/// nothing about what the endpoint accepts: it gets 401 (404 while `ADMIN_TOKEN` is unset).
#[derive(Debug)]
pub(crate) struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::internal(
                "admin check",
                &"application state is not registered",
            )));
        };
        let Some(expected) = &state.admin_token else {
            return ready(Err(ApiError::AdminDisabled));
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        if token_matches(given.as_bytes(), expected.expose_secret().as_bytes()) {
            ready(Ok(Admin))
        } else {
            ready(Err(ApiError::Unauthorized))
        }
    }
}

/// The credentials of a `Bearer` authorization: the scheme is case-insensitive and followed by
/// one or more spaces (RFC 7235).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// Compares a presented token with the expected one in time that depends only on the expected
/// token's length, so response timing reveals neither how many leading bytes matched nor how
/// long the token is. Eight lines, so no crate for it.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    // Keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer, token_matches};

    #[test]
    fn the_bearer_scheme_matches_in_any_case() {
        for header in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "bEaReR  abc",
            " Bearer abc ",
        ] {
            assert_eq!(bearer(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearerabc", "abc", "", "Bearer"] {
            assert_eq!(bearer(header).filter(|t| !t.is_empty()), None, "{header:?}");
        }
    }

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cre", b"s3cret"));
        assert!(!token_matches(b"s3cret!", b"s3cret"));
        assert!(!token_matches(b"s3creT", b"s3cret"));
        assert!(!token_matches(b"", b"s3cret"));
        // A prefix padded with NULs must not pass for the token.
        assert!(!token_matches(b"s3c\0\0\0", b"s3c"));
    }
}
