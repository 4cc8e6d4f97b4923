//! The generic rule: every type parameter (and `Self`) that reaches the return type or an
//! argument left out of the key is named in the key, so instantiations never share entries.

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::{GenericParam, Type};

use super::{Errors, key::Keyed, params::Param, ty::find_impl_trait};
use crate::args::Func;

/// Expressions naming the types that tell the function's instantiations apart.
pub(super) fn discriminators(
    func: &Func,
    ret: &Type,
    params: &[Param<'_>],
    keyed: &Keyed,
    errors: &mut Errors,
) -> Vec<TokenStream> {
    let mut reached = Vec::new();
    idents_in(ret.to_token_stream(), &mut reached);
    let mut values = Vec::new();
    for param in params {
        // A pattern that binds nothing hides its value from the body, but not its type.
        let in_key =
            !param.names.is_empty() && param.names.iter().all(|n| keyed.roots.contains(&n.ident));
        if in_key {
            continue;
        }
        idents_in(param.ty.to_token_stream(), &mut reached);
        if find_impl_trait(param.ty).is_some() {
            match param.name {
                // An anonymous type parameter: named by its value's type.
                Some(name) => values.push(quote!(::core::any::type_name_of_val(&#name))),
                None => errors.spanned(
                    param.pat,
                    "an `impl Trait` argument left out of the key must be bound to a name, so the key can tell its types apart",
                ),
            }
        }
    }
    let skip_self = func.sig.receiver().is_some() && !keyed.self_in_key;
    let mut types = Vec::new();
    for generic in &func.sig.generics.params {
        match generic {
            GenericParam::Type(t) if reached.contains(&t.ident.to_string()) => {
                let ident = &t.ident;
                types.push(quote!(::core::any::type_name::<#ident>()));
            }
            GenericParam::Const(c) if reached.contains(&c.ident.to_string()) => {
                let ident = &c.ident;
                types.push(quote!(::core::any::type_name::<[(); #ident]>()));
            }
            _ => {}
        }
    }
    if skip_self || reached.iter().any(|i| i == "Self") {
        types.push(quote!(::core::any::type_name::<Self>()));
    }
    types.extend(values);
    types
}

/// Every identifier in `tokens`.
fn idents_in(tokens: TokenStream, out: &mut Vec<String>) {
    for tree in tokens {
        match tree {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => idents_in(g.stream(), out),
            _ => {}
        }
    }
}
