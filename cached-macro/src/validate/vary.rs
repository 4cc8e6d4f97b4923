//! `vary(req = ["authorization"])`: each source an argument (or bound name) of the function,
//! not skipped, named once, and not also in a key template; each header named once. The
//! header names themselves are checked at compile time by the runtime's rule.

use proc_macro2::Span;
use syn::{Ident, LitStr, ext::IdentExt};

use super::{
    Errors,
    key::Keyed,
    params::{Param, arg_names, find},
};
use crate::args::{Skip, Vary};

/// The `vary(...)` sources: arguments (or bound names) of the function, not skipped, each
/// named once; the header names are checked at compile time by the runtime's rule.
pub(super) fn sources(
    vary: Option<(Span, Vec<Vary>)>,
    skip: Option<&(Span, Skip)>,
    params: &[Param<'_>],
    errors: &mut Errors,
) -> Vec<(Ident, Vec<LitStr>)> {
    let Some((span, sources)) = vary else {
        return Vec::new();
    };
    if sources.is_empty() {
        errors.at(
            span,
            "`vary()` names no argument: name the request and its headers, like `vary(req = [\"authorization\"])`",
        );
    }
    let mut out: Vec<(Ident, Vec<LitStr>)> = Vec::new();
    for Vary { arg, headers } in sources {
        let name = arg.unraw().to_string();
        if find(params, &name).is_none() {
            errors.at(
                arg.span(),
                format!("`vary` names no argument `{arg}`; {}", arg_names(params)),
            );
            continue;
        }
        if out.iter().any(|(a, _)| a.unraw() == name) {
            errors.at(arg.span(), format!("`{arg}` is named twice in `vary`"));
            continue;
        }
        let skipped = match skip {
            Some((_, Skip::Args(names))) => names.iter().any(|n| n.unraw() == name),
            _ => false,
        };
        if skipped {
            errors.at(
                arg.span(),
                format!("`{arg}` is both skipped and named in `vary`: `vary` already leaves it out of the key but for the headers it names; remove it from `skip`"),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        for header in &headers {
            if seen.contains(&header.value()) {
                errors.at(
                    header.span(),
                    format!("header {:?} is named twice in `vary`", header.value()),
                );
            }
            seen.push(header.value());
        }
        out.push((arg, headers));
    }
    out
}

/// The sources' argument names, as written without `r#`.
pub(super) fn names(vary: &[(Ident, Vec<LitStr>)]) -> Vec<String> {
    vary.iter().map(|(a, _)| a.unraw().to_string()).collect()
}

/// A source the key template also names: `vary` keys on its headers, not on it.
pub(super) fn check_not_in_template(
    vary: &[(Ident, Vec<LitStr>)],
    keyed: &Keyed,
    errors: &mut Errors,
) {
    for (arg, _) in vary {
        if keyed.roots.contains(arg) {
            errors.at(
                arg.span(),
                format!("`{arg}` is named in `vary` and in the key template: `vary` keys on its headers, the template cannot key on it"),
            );
        }
    }
}
