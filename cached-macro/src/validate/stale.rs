//! The stale options together: a window for every other one to act in, something to run in
//! the background for a hard timeout, a soft timeout below the hard one, and nothing that
//! moves a revalidating handler's body off its request.

use proc_macro2::Span;

use super::{Errors, options::Secs, options::seconds};
use crate::args::StaleArgs;

/// The validated stale options the expansion reads.
pub(crate) struct StaleOptions {
    pub(crate) window: Secs,
    pub(crate) fail_safe: bool,
    pub(crate) throttle: Option<Secs>,
    pub(crate) while_revalidate: bool,
    pub(crate) soft_timeout: Option<Secs>,
    pub(crate) hard_timeout: Option<Secs>,
    pub(crate) early: bool,
}

impl StaleOptions {
    /// Whether the body may run in the background, so it must be `Send + 'static`.
    pub(crate) fn background(&self) -> bool {
        self.while_revalidate || self.soft_timeout.is_some() || self.early
    }
}

fn on(flag: Option<&(Span, syn::LitBool)>) -> bool {
    flag.is_some_and(|(_, f)| f.value)
}

/// Checks the stale options; `None` when none is given or one is invalid (pushed).
pub(super) fn check(
    args: &StaleArgs,
    revalidate: bool,
    errors: &mut Errors,
) -> Option<StaleOptions> {
    if !args.any() {
        return None;
    }
    let Some((_, window)) = &args.window else {
        let name = [
            args.fail_safe.as_ref().map(|(s, _)| (*s, "fail_safe")),
            args.throttle
                .as_ref()
                .map(|(s, _)| (*s, "fail_safe_throttle")),
            args.while_revalidate
                .as_ref()
                .map(|(s, _)| (*s, "stale_while_revalidate")),
            args.soft_timeout
                .as_ref()
                .map(|(s, _)| (*s, "soft_timeout")),
            args.hard_timeout
                .as_ref()
                .map(|(s, _)| (*s, "hard_timeout")),
            args.early.as_ref().map(|(s, _)| (*s, "early_refresh")),
        ];
        for (span, name) in name.into_iter().flatten() {
            errors.at(
                span,
                format!(
                    "`{name}` needs a stale window: add how long entries may be served after their ttl, like `stale = 600`"
                ),
            );
        }
        return None;
    };
    let window = seconds("stale", window, 1, errors);
    let throttle = args
        .throttle
        .as_ref()
        .and_then(|(_, v)| seconds("fail_safe_throttle", v, 1, errors));
    let soft_timeout = args
        .soft_timeout
        .as_ref()
        .and_then(|(_, v)| seconds("soft_timeout", v, 1, errors));
    let hard_timeout = args
        .hard_timeout
        .as_ref()
        .and_then(|(_, v)| seconds("hard_timeout", v, 1, errors));
    let options = StaleOptions {
        window: window?,
        fail_safe: on(args.fail_safe.as_ref()) || throttle.is_some(),
        throttle,
        while_revalidate: on(args.while_revalidate.as_ref()),
        soft_timeout,
        hard_timeout,
        early: on(args.early.as_ref()),
    };
    if let (Some((span, _)), false) = (&args.hard_timeout, options.background()) {
        errors.at(
            *span,
            "`hard_timeout` bounds a body running in the background: add `stale_while_revalidate`, `soft_timeout` or `early_refresh`",
        );
    }
    if let (Some(Secs::Literal(soft, _)), Some(Secs::Literal(hard, span))) =
        (&options.soft_timeout, &options.hard_timeout)
        && soft >= hard
    {
        errors.at(
            *span,
            format!("`hard_timeout` ({hard} s) must be longer than `soft_timeout` ({soft} s)"),
        );
    }
    if revalidate && options.background() {
        let (span, name) = [
            args.while_revalidate
                .as_ref()
                .filter(|(_, f)| f.value)
                .map(|(s, _)| (*s, "stale_while_revalidate")),
            args.soft_timeout
                .as_ref()
                .map(|(s, _)| (*s, "soft_timeout")),
            args.early
                .as_ref()
                .filter(|(_, f)| f.value)
                .map(|(s, _)| (*s, "early_refresh")),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or((Span::call_site(), "stale_while_revalidate"));
        errors.at(
            span,
            format!(
                "`{name}` cannot be used with `revalidate`: a handler's body runs for its request; use `fail_safe` (its `Cache-Control` gets `stale-if-error`)"
            ),
        );
    }
    Some(options)
}
