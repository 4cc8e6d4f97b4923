//! Tokens the getter and the companions share: the key's parts, the types that tell a
//! generic function's instantiations apart, and the parameter types a companion can take.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Ident, Type};

use crate::validate::KeyPart;

/// `.types(&[…])`, when the function is generic.
pub(super) fn types_tokens(types: &[TokenStream]) -> Option<TokenStream> {
    (!types.is_empty()).then(|| quote!(.types(&[#(#types),*])))
}

/// One key part. In the getter, arguments are keyed through the probe (an extractor on what
/// it holds); in a companion, `direct` names the parameters that already are the key's value.
pub(super) fn key_part(
    part: &KeyPart,
    private: &TokenStream,
    direct: Option<&[Ident]>,
) -> TokenStream {
    let is_direct = |name: &Ident| direct.is_some_and(|d| d.contains(name));
    match part {
        KeyPart::Arg(name) => {
            let span = name.span();
            if is_direct(name) {
                quote_spanned!(span=> .key_arg(#name))
            } else if direct.is_some() {
                quote_spanned!(span=> .key_arg((&&#private::KeyProbe(#name)).__cached_key()))
            } else {
                quote_spanned!(span=> .key_arg((&&#private::KeyProbe(&#name)).__cached_key()))
            }
        }
        KeyPart::Value { root, fields, span } => {
            let root_ident = syn::parse2::<Ident>(root.clone()).ok();
            if !fields.is_empty() {
                quote_spanned!(*span=> .key_value(&#root #fields))
            } else if root_ident.as_ref().is_some_and(is_direct) {
                quote_spanned!(*span=> .key_value(#root))
            } else if direct.is_some() {
                quote_spanned!(*span=> .key_value((&&#private::KeyProbe(#root)).__cached_key()))
            } else {
                quote_spanned!(*span=> .key_value((&&#private::KeyProbe(&#root)).__cached_key()))
            }
        }
        KeyPart::Literal(text) => quote!(.literal(#text)),
    }
}

/// `.tag()` and the parts of each tag template: placeholders keyed as in [`key_part`].
pub(super) fn tag_tokens(
    tags: &[crate::validate::Tag],
    private: &TokenStream,
    direct: Option<&[Ident]>,
) -> TokenStream {
    tags.iter()
        .map(|tag| {
            let parts = tag.parts.iter().map(|part| match part {
                KeyPart::Literal(text) => quote!(.tag_literal(#text)),
                value => retarget(key_part(value, private, direct)),
            });
            quote!(.tag() #(#parts)*)
        })
        .collect()
}

/// A key part's `.key_value(…)` or `.key_arg(…)` call as `.tag_value(…)`, spans kept.
fn retarget(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|tree| match tree {
            proc_macro2::TokenTree::Ident(i) if i == "key_value" || i == "key_arg" => {
                proc_macro2::TokenTree::Ident(Ident::new("tag_value", i.span()))
            }
            other => other,
        })
        .collect()
}

/// `.vary(&req, &["authorization"])` for each `vary` source of the getter.
pub(super) fn vary_tokens(vary: &[(Ident, Vec<syn::LitStr>)]) -> TokenStream {
    vary.iter()
        .filter(|(_, headers)| !headers.is_empty())
        .map(|(arg, headers)| quote_spanned!(arg.span()=> .vary(&#arg, &[#(#headers),*])))
        .collect()
}

/// Whether `impl KeyFor<ty>` can be written: no `impl Trait` and no elided lifetime, which
/// are not allowed in that position.
pub(super) fn generic_friendly(ty: &Type) -> bool {
    fn walk(tokens: TokenStream, prev_amp: bool) -> bool {
        let mut prev_amp = prev_amp;
        for tree in tokens {
            match &tree {
                proc_macro2::TokenTree::Ident(i) if i == "impl" || i == "dyn" => return false,
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '&' => {
                    prev_amp = true;
                    continue;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '\'' => {
                    prev_amp = false;
                    continue;
                }
                proc_macro2::TokenTree::Ident(i) if i == "_" => return false,
                proc_macro2::TokenTree::Group(g) if !walk(g.stream(), false) => return false,
                _ => {}
            }
            if prev_amp {
                // `&T` without a lifetime.
                return false;
            }
        }
        true
    }
    walk(quote!(#ty), false)
}

/// The type inside the invisible groups a `macro_rules!` caller leaves around it.
pub(super) fn strip_group(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => strip_group(&g.elem),
        _ => ty,
    }
}
