//! How a handler's return type answers a decision, for `#[rate_limit]`: a refusal becomes a
//! value of that type, and an allowed answer gets the decision's fields.

use super::Decision;

/// A return type `#[rate_limit]` can answer with: a refusal is a value of it, and an allowed
/// answer may carry the decision's `RateLimit` fields.
///
/// Implemented for Actix's `HttpResponse` and axum's `Response` (with their features), for
/// `Result<T, E>` of one (a refusal is `Ok`, an `Err` passes unchanged), and for [`Limited`],
/// which wraps any other responder. Implement it for an application's own response type to
/// answer refusals its own way.
#[diagnostic::on_unimplemented(
    message = "#[rate_limit] cannot answer a refusal as `{Self}`",
    label = "this return type has no `LimitResponse`",
    note = "return `HttpResponse` (Actix) or `Response` (axum), a `Result` of one, or wrap the answer in `cached_runtime::ratelimit::Limited<T>` (`Limited::from(web::Json(item))`)"
)]
pub trait LimitResponse: Sized {
    /// The answer to a refused request.
    fn refused(decision: &Decision) -> Self;

    /// The handler's answer to an allowed request, with the decision's fields added when the
    /// type can carry them.
    fn allowed(self, decision: &Decision) -> Self;
}

impl<T: LimitResponse, E> LimitResponse for Result<T, E> {
    fn refused(decision: &Decision) -> Self {
        Ok(T::refused(decision))
    }

    fn allowed(self, decision: &Decision) -> Self {
        self.map(|t| t.allowed(decision))
    }
}

/// Any responder, made able to answer a refusal: `Limited<web::Json<Item>>` answers the JSON
/// with the `RateLimit` fields, or the `429` problem.
#[derive(Debug)]
pub struct Limited<R>(pub(crate) Answer<R>);

#[derive(Debug)]
pub(crate) enum Answer<R> {
    /// As the handler made it, before a decision was attached.
    Plain(R),
    Allowed(R, Box<Decision>),
    Refused(Box<Decision>),
}

impl<R> From<R> for Limited<R> {
    fn from(answer: R) -> Self {
        Self(Answer::Plain(answer))
    }
}

impl<R> Limited<R> {
    /// The handler's answer, unless the request was refused.
    pub fn into_inner(self) -> Option<R> {
        match self.0 {
            Answer::Plain(r) | Answer::Allowed(r, _) => Some(r),
            Answer::Refused(_) => None,
        }
    }

    /// The decision attached, once there is one.
    pub fn decision(&self) -> Option<&Decision> {
        match &self.0 {
            Answer::Plain(_) => None,
            Answer::Allowed(_, d) | Answer::Refused(d) => Some(d),
        }
    }
}

impl<R> LimitResponse for Limited<R> {
    fn refused(decision: &Decision) -> Self {
        Self(Answer::Refused(Box::new(decision.clone())))
    }

    fn allowed(self, decision: &Decision) -> Self {
        match self.0 {
            Answer::Plain(r) | Answer::Allowed(r, _) => {
                Self(Answer::Allowed(r, Box::new(decision.clone())))
            }
            refused @ Answer::Refused(_) => Self(refused),
        }
    }
}

#[cfg(feature = "actix")]
mod actix_impls {
    use actix_web::{HttpRequest, HttpResponse, Responder, body::EitherBody};

    use super::{Answer, Decision, LimitResponse, Limited};
    use crate::ratelimit::actix::{insert_fields, refusal};

    impl LimitResponse for HttpResponse {
        fn refused(decision: &Decision) -> Self {
            refusal(decision)
        }

        fn allowed(mut self, decision: &Decision) -> Self {
            insert_fields(decision, self.headers_mut());
            self
        }
    }

    impl<R: Responder> Responder for Limited<R> {
        type Body = EitherBody<R::Body>;

        fn respond_to(self, req: &HttpRequest) -> HttpResponse<Self::Body> {
            match self.0 {
                Answer::Plain(r) => r.respond_to(req).map_into_left_body(),
                Answer::Allowed(r, decision) => {
                    let mut response = r.respond_to(req).map_into_left_body();
                    insert_fields(&decision, response.headers_mut());
                    response
                }
                Answer::Refused(decision) => refusal(&decision).map_into_right_body(),
            }
        }
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum::{
        body::Body,
        response::{IntoResponse, Response},
    };

    use super::{Answer, Decision, LimitResponse, Limited};
    use crate::ratelimit::tower::{insert_fields, refusal};

    impl LimitResponse for Response {
        fn refused(decision: &Decision) -> Self {
            refusal::<Body>(decision)
        }

        fn allowed(mut self, decision: &Decision) -> Self {
            insert_fields(decision, self.headers_mut());
            self
        }
    }

    impl<R: IntoResponse> IntoResponse for Limited<R> {
        fn into_response(self) -> Response {
            match self.0 {
                Answer::Plain(r) => r.into_response(),
                Answer::Allowed(r, decision) => {
                    let mut response = r.into_response();
                    insert_fields(&decision, response.headers_mut());
                    response
                }
                Answer::Refused(decision) => refusal::<Body>(&decision),
            }
        }
    }
}
