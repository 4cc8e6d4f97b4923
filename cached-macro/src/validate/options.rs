//! The options on their own: the required ones present, durations whole seconds or
//! `Duration` expressions, the version a `u32`, the lock's TTL.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Expr, ExprLit, Lit, LitStr, Path};

use super::Errors;
use crate::args::{Args, Lock, Seconds};

/// The lock TTL of `lock = true`, in seconds: longer than most fills, short enough that a
/// crashed holder is soon forgotten.
const DEFAULT_LOCK_SECS: u64 = 10;

/// The validated options the expansion reads as they are.
pub(crate) struct Options {
    /// The runtime crate's path: `::cached_runtime`, or the `crate = …` option.
    pub(crate) krate: TokenStream,
    pub(crate) prefix: LitStr,
    pub(crate) ttl: Secs,
    pub(crate) null_ttl: Option<Secs>,
    pub(crate) jitter: Option<Secs>,
    pub(crate) version: u32,
    /// The cross-process fill lock's TTL, when `lock` is on.
    pub(crate) lock: Option<Secs>,
    /// `near = false`: the near cache never answers this function.
    pub(crate) near: bool,
    pub(crate) cache: Option<Expr>,
    /// `shape = …`, when given.
    pub(crate) shape: Option<Path>,
    /// `revalidate`: the `Cache-Control` policy given, if any.
    pub(crate) revalidate: Option<Option<LitStr>>,
    /// Whether to generate `{name}_key` and `{name}_invalidate` (`companions = false`: not).
    pub(crate) companions: bool,
    /// `stale = …` and the options that act in its window.
    pub(crate) stale: Option<super::stale::StaleOptions>,
}

/// A validated duration option.
pub(crate) enum Secs {
    /// Whole seconds from an integer literal, checked at compile time.
    Literal(u64, Span),
    /// A `Duration` expression, checked when the policy is evaluated (in a `static`).
    Duration(Expr),
}

/// Checks every option that needs no knowledge of the function; `None` when a required one
/// is missing or invalid (the error is pushed).
pub(super) fn check(args: &Args, errors: &mut Errors) -> Option<Options> {
    let prefix = match &args.prefix {
        Some((_, lit)) => Some(lit.clone()),
        None => {
            errors.at(
                Span::call_site(),
                "missing `prefix`: add the key prefix of this function's entries, like `prefix = \"item\"`",
            );
            None
        }
    };
    let ttl = match &args.ttl {
        Some((_, value)) => seconds("ttl", value, 1, errors),
        None => {
            errors.at(
                Span::call_site(),
                "missing `ttl`: add how long entries live, in seconds, like `ttl = 600`",
            );
            None
        }
    };
    let null_ttl = args
        .null_ttl
        .as_ref()
        .and_then(|(_, v)| seconds("null_ttl", v, 1, errors));
    let jitter = args
        .jitter
        .as_ref()
        .and_then(|(_, v)| seconds("jitter", v, 0, errors));
    let version = match &args.version {
        Some((_, lit)) => lit.base10_parse::<u32>().unwrap_or_else(|e| {
            errors.at(lit.span(), format!("`version` takes a `u32`: {e}"));
            0
        }),
        None => 0,
    };
    let lock = match &args.lock {
        None => None,
        Some((_, Lock::Flag(flag))) => flag
            .value
            .then_some(Secs::Literal(DEFAULT_LOCK_SECS, flag.span)),
        Some((_, Lock::Ttl(v))) => seconds("lock", v, 1, errors),
    };
    Some(Options {
        krate: match &args.krate {
            Some((_, path)) => path.into_token_stream(),
            None => quote!(::cached_runtime),
        },
        prefix: prefix?,
        ttl: ttl?,
        null_ttl,
        jitter,
        version,
        lock,
        near: args.near.as_ref().is_none_or(|(_, flag)| flag.value),
        cache: args.cache.as_ref().map(|(_, e)| e.clone()),
        shape: args.shape.as_ref().map(|(_, p)| p.clone()),
        revalidate: args.revalidate.as_ref().map(|(_, policy)| policy.clone()),
        companions: args.companions.as_ref().is_none_or(|(_, flag)| flag.value),
        stale: super::stale::check(&args.stale, args.revalidate.is_some(), errors),
    })
}

/// Validates a duration option; `min` is the least number of seconds allowed.
pub(super) fn seconds(name: &str, value: &Seconds, min: u64, errors: &mut Errors) -> Option<Secs> {
    let expr = match value {
        Seconds::Duration(expr) => return Some(Secs::Duration(expr.clone())),
        Seconds::Literal(expr) => expr,
    };
    let form = format!(
        "`{name}` takes whole seconds as an integer literal, like `{name} = 600`, or a `Duration` expression"
    );
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = &expr
    else {
        if let Expr::Unary(_) = &expr {
            errors.spanned(
                expr,
                format!("`{name}` must be a positive number of seconds, like `{name} = 600`"),
            );
        } else {
            errors.spanned(expr, form);
        }
        return None;
    };
    if !int.suffix().is_empty() {
        errors.at(
            int.span(),
            format!("`{name}` is a number of seconds without a suffix, like `{name} = 600`"),
        );
        return None;
    }
    match int.base10_parse::<u64>() {
        Ok(0) if min > 0 => {
            errors.at(
                int.span(),
                format!("`{name}` must be at least 1 second, like `{name} = 600`"),
            );
            None
        }
        Ok(secs) => Some(Secs::Literal(secs, int.span())),
        Err(e) => {
            errors.at(int.span(), format!("`{name}`: {e}"));
            None
        }
    }
}
