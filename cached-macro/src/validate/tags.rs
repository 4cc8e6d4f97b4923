//! `tags = ["category:{category}", "user:{user.id}"]`: each template read as a key template
//! is (the runtime's `template_error` is evaluated on it at compile time by the expansion),
//! and every value it names part of the key, so an entry's tags follow from its key.

use proc_macro2::Span;
use syn::LitStr;

use super::{
    Errors,
    key::{KeyPart, Keyed},
    params::Param,
    template,
};
use crate::args::Func;

/// One tag template and its parts.
pub(crate) struct Tag {
    pub(crate) lit: LitStr,
    pub(crate) parts: Vec<KeyPart>,
}

/// The tags' parts; checks each names only what the key is made of.
pub(super) fn parts(
    tags: Option<&(Span, Vec<LitStr>)>,
    func: &Func,
    params: &[Param<'_>],
    key: &Keyed,
    errors: &mut Errors,
) -> Vec<Tag> {
    let Some((span, lits)) = tags else {
        return Vec::new();
    };
    if lits.is_empty() {
        errors.at(
            *span,
            "`tags = []` names no tag: list templates, like `tags = [\"category:{category}\"]`",
        );
    }
    let mut out: Vec<Tag> = Vec::new();
    for lit in lits {
        let template = lit.value();
        if template.is_empty() {
            errors.at(
                lit.span(),
                "empty tag: a tag names a group of entries, like `\"category:{category}\"`",
            );
            continue;
        }
        if out.iter().any(|t| t.lit.value() == template) {
            errors.at(lit.span(), format!("tag {template:?} is listed twice"));
            continue;
        }
        let mut keyed = Keyed {
            parts: Vec::new(),
            roots: Vec::new(),
            self_in_key: false,
        };
        template::parts("tag template", lit, func, params, &mut keyed, errors);
        for root in &keyed.roots {
            if !key.roots.contains(root) {
                errors.at(
                    lit.span(),
                    format!(
                        "tag {template:?} names `{root}`, which is not part of the key: an entry's tags must follow from its key"
                    ),
                );
            }
        }
        if keyed.self_in_key && !key.self_in_key {
            errors.at(
                lit.span(),
                format!(
                    "tag {template:?} names fields of `self`, which are not part of the key: an entry's tags must follow from its key"
                ),
            );
        }
        out.push(Tag {
            lit: lit.clone(),
            parts: keyed.parts,
        });
    }
    out
}
