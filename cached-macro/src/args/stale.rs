//! Parsing the stale options: `stale`, `fail_safe`, `fail_safe_throttle`,
//! `stale_while_revalidate`, `soft_timeout`, `hard_timeout`, `early_refresh`.

use proc_macro2::Span;
use syn::{Ident, LitBool, Token, ext::IdentExt, parse::ParseStream};

use super::{Seconds, parse_seconds, set};

/// Their names, in the order the documentation lists them.
pub(crate) const NAMES: [&str; 7] = [
    "stale",
    "fail_safe",
    "fail_safe_throttle",
    "stale_while_revalidate",
    "soft_timeout",
    "hard_timeout",
    "early_refresh",
];

/// The stale options as written, each with the span of its name.
#[derive(Default)]
pub(crate) struct StaleArgs {
    /// `stale = 600`: the stale window.
    pub(crate) window: Option<(Span, Seconds)>,
    pub(crate) fail_safe: Option<(Span, LitBool)>,
    pub(crate) throttle: Option<(Span, Seconds)>,
    pub(crate) while_revalidate: Option<(Span, LitBool)>,
    pub(crate) soft_timeout: Option<(Span, Seconds)>,
    pub(crate) hard_timeout: Option<(Span, Seconds)>,
    pub(crate) early: Option<(Span, LitBool)>,
}

impl StaleArgs {
    /// Whether any is given.
    pub(crate) fn any(&self) -> bool {
        self.window.is_some()
            || self.fail_safe.is_some()
            || self.throttle.is_some()
            || self.while_revalidate.is_some()
            || self.soft_timeout.is_some()
            || self.hard_timeout.is_some()
            || self.early.is_some()
    }
}

/// Whether the next option is one of these.
pub(crate) fn peek(input: ParseStream<'_>) -> bool {
    input
        .fork()
        .call(Ident::parse_any)
        .is_ok_and(|ident| NAMES.contains(&ident.to_string().as_str()))
}

/// Parses one of them into `args`.
pub(crate) fn parse(input: ParseStream<'_>, args: &mut StaleArgs) -> syn::Result<()> {
    let ident = input.call(Ident::parse_any)?;
    let span = ident.span();
    match ident.to_string().as_str() {
        "stale" => set(
            &mut args.window,
            "stale",
            span,
            parse_seconds(input, "stale")?,
        ),
        "fail_safe" => set(&mut args.fail_safe, "fail_safe", span, flag(input, &ident)?),
        "fail_safe_throttle" => set(
            &mut args.throttle,
            "fail_safe_throttle",
            span,
            parse_seconds(input, "fail_safe_throttle")?,
        ),
        "stale_while_revalidate" => set(
            &mut args.while_revalidate,
            "stale_while_revalidate",
            span,
            flag(input, &ident)?,
        ),
        "soft_timeout" => set(
            &mut args.soft_timeout,
            "soft_timeout",
            span,
            parse_seconds(input, "soft_timeout")?,
        ),
        "hard_timeout" => set(
            &mut args.hard_timeout,
            "hard_timeout",
            span,
            parse_seconds(input, "hard_timeout")?,
        ),
        _ => set(&mut args.early, "early_refresh", span, flag(input, &ident)?),
    }
}

/// `name` alone (on), or `name = true | false`.
fn flag(input: ParseStream<'_>, name: &Ident) -> syn::Result<LitBool> {
    if !input.peek(Token![=]) {
        return Ok(LitBool::new(true, name.span()));
    }
    input.parse::<Token![=]>()?;
    input.parse::<LitBool>().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("`{name}` takes `true` or `false`, or nothing, like `{name}`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::super::Args;

    #[test]
    fn flags_stand_alone_or_take_a_bool_and_durations_parse_like_ttl() {
        let args: Args = syn::parse2(quote!(
            prefix = "x",
            ttl = 1,
            stale = 600,
            fail_safe,
            fail_safe_throttle = 5,
            stale_while_revalidate = false,
            soft_timeout = Duration::from_millis(200),
            hard_timeout = 30,
            early_refresh,
        ))
        .expect("parses");
        let stale = args.stale;
        assert!(stale.window.is_some() && stale.throttle.is_some());
        assert!(stale.fail_safe.is_some_and(|(_, f)| f.value));
        assert!(stale.while_revalidate.is_some_and(|(_, f)| !f.value));
        assert!(stale.early.is_some_and(|(_, f)| f.value));
        assert!(stale.soft_timeout.is_some() && stale.hard_timeout.is_some());
        let e = syn::parse2::<Args>(quote!(fail_safe = 1))
            .err()
            .expect("an error")
            .to_string();
        assert_eq!(
            e,
            "`fail_safe` takes `true` or `false`, or nothing, like `fail_safe`"
        );
        let e = syn::parse2::<Args>(quote!(stale = 1, stale = 2))
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("given twice"));
    }
}
