//! What the key is made of: every argument (or bound name) in signature order but those
//! `skip` or `vary` leave out, or what a key template names; and the `skip` rules.

use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr, ext::IdentExt};

use super::{
    Errors,
    params::{Param, arg_names, find},
    receiver, template,
};
use crate::args::{Func, Skip};

/// One part of the key after `prefix:`.
pub(crate) enum KeyPart {
    /// An argument, joined to the previous one by `:`, keyed on what it holds.
    Arg(Ident),
    /// A template placeholder: an argument (keyed on what it holds) or a field path of one
    /// (`q.page`, `self.tenant`), spanned on the template.
    Value {
        root: TokenStream,
        fields: TokenStream,
        span: Span,
    },
    /// A template's literal text.
    Literal(String),
}

/// The key's parts, and what they are made of.
pub(super) struct Keyed {
    pub(super) parts: Vec<KeyPart>,
    /// Arguments in the key, once each, in order of first appearance.
    pub(super) roots: Vec<Ident>,
    /// Whether a template names `self` fields.
    pub(super) self_in_key: bool,
}

/// The key's parts from `skip` or a template; checks `skip` and the receiver rule.
pub(super) fn parts(
    skip: Option<&(Span, Skip)>,
    template: Option<&(Span, LitStr)>,
    func: &Func,
    params: &[Param<'_>],
    vary_args: &[String],
    errors: &mut Errors,
) -> Keyed {
    let receiver = func.sig.receiver();
    let mut keyed = Keyed {
        parts: Vec::new(),
        roots: Vec::new(),
        self_in_key: false,
    };
    let mut skipped: Vec<String> = Vec::new();
    let mut skip_self: Option<Span> = None;
    let mut skip_all = false;
    match skip {
        None => {}
        Some((_, Skip::All)) => skip_all = true,
        Some((span, Skip::Args(names))) => {
            if names.is_empty() {
                errors.at(
                    *span,
                    "`skip()` names no argument: list the arguments to leave out, like `skip(state)`",
                );
            }
            let mut seen: Vec<&Ident> = Vec::new();
            for name in names {
                if name == "self" {
                    if receiver.is_none() {
                        errors.at(name.span(), "`skip(self)` on a function without `self`");
                    }
                    skip_self = Some(name.span());
                } else if template.is_some() {
                    errors.at(
                        name.span(),
                        "`skip` has no use with `key`: arguments the template does not name are already left out of the key (only `skip(self)` is allowed with it)",
                    );
                } else if find(params, &name.unraw().to_string()).is_none() {
                    errors.at(
                        name.span(),
                        format!("`skip` names no argument `{name}`; {}", arg_names(params)),
                    );
                }
                if seen.iter().any(|s| s.unraw() == name.unraw()) {
                    errors.at(name.span(), format!("`{name}` is skipped twice"));
                }
                seen.push(name);
                skipped.push(name.unraw().to_string());
            }
        }
    }
    if let Some((_, lit)) = template {
        template::parts("key template", lit, func, params, &mut keyed, errors);
    } else if !skip_all {
        for name in params.iter().flat_map(|p| &p.names) {
            let ident = &name.ident;
            let unraw = ident.unraw().to_string();
            if skipped.contains(&unraw) || vary_args.contains(&unraw) {
                continue;
            }
            keyed.parts.push(KeyPart::Arg(ident.clone()));
            keyed.roots.push(ident.clone());
        }
    }
    if let Some(receiver) = receiver {
        receiver::check(receiver, skip_self, skip_all, keyed.self_in_key, errors);
    }
    keyed
}

/// The arguments (or bound names) neither in the key nor read by `vary`: the expansion warns
/// for those that carry request headers.
pub(super) fn unkeyed(params: &[Param<'_>], keyed: &Keyed, vary_args: &[String]) -> Vec<Ident> {
    params
        .iter()
        .flat_map(|p| &p.names)
        .map(|n| &n.ident)
        .filter(|n| !keyed.roots.contains(n) && !vary_args.contains(&n.unraw().to_string()))
        .cloned()
        .collect()
}
