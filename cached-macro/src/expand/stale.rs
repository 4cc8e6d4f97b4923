//! The stale options in the expansion: the policy wrapped by `with_stale`, and the entry
//! point whose body may move to the background.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::seconds;
use crate::validate::{Secs, StaleOptions};

/// `policy` with the stale options, as a constant expression.
pub(super) fn wrap_policy(
    policy: TokenStream,
    stale: &StaleOptions,
    private: &TokenStream,
) -> TokenStream {
    let window = seconds(&stale.window, "stale_secs", private);
    let ms = |secs: Option<&Secs>| match secs {
        None => quote!(0),
        Some(Secs::Literal(value, span)) => {
            let mut literal = Literal::u64_unsuffixed(value.saturating_mul(1000));
            literal.set_span(*span);
            quote!(#literal)
        }
        Some(secs) => seconds(secs, "stale_ms", private),
    };
    let throttle = ms(stale.throttle.as_ref());
    let soft = ms(stale.soft_timeout.as_ref());
    let hard = ms(stale.hard_timeout.as_ref());
    let (fail_safe, swr, early) = (stale.fail_safe, stale.while_revalidate, stale.early);
    quote!(#private::with_stale(#policy, #window, #fail_safe, #throttle, #swr, #soft, #hard, #early))
}

/// The `Selected` method that runs the call: `run_refresh` when the body may run in the
/// background (it must be `Send + 'static` then), `run` otherwise.
pub(super) fn run_method(stale: Option<&StaleOptions>) -> proc_macro2::Ident {
    if stale.is_some_and(StaleOptions::background) {
        format_ident!("run_refresh")
    } else {
        format_ident!("run")
    }
}
