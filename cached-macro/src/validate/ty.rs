//! Reading types as written: the helpers the rules share to look through references,
//! parentheses and type arguments.

use syn::{GenericArgument, Ident, PathArguments, Type, TypePath};

/// The type inside any parentheses (and invisible groups from `macro_rules!`).
pub(super) fn strip_parens(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip_parens(&p.elem),
        Type::Group(g) => strip_parens(&g.elem),
        _ => ty,
    }
}

/// The last path segment of a type, behind references and parentheses, with its type
/// arguments.
pub(super) fn last_segment(ty: &Type) -> Option<(&Ident, Vec<&Type>)> {
    match ty {
        Type::Reference(r) => last_segment(&r.elem),
        Type::Paren(p) => last_segment(&p.elem),
        Type::Group(g) => last_segment(&g.elem),
        Type::Path(TypePath { qself: None, path }) => {
            let seg = path.segments.last()?;
            let args = match &seg.arguments {
                PathArguments::AngleBracketed(a) => a
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((&seg.ident, args))
        }
        _ => None,
    }
}

/// The first `impl Trait` in `ty`, at any depth of references, tuples and type arguments.
pub(super) fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Reference(r) => find_impl_trait(&r.elem),
        Type::Paren(p) => find_impl_trait(&p.elem),
        Type::Group(g) => find_impl_trait(&g.elem),
        Type::Array(a) => find_impl_trait(&a.elem),
        Type::Slice(s) => find_impl_trait(&s.elem),
        Type::Ptr(p) => find_impl_trait(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_impl_trait),
        Type::Path(p) => p.path.segments.iter().find_map(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().find_map(|a| match a {
                GenericArgument::Type(t) => find_impl_trait(t),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn finds_impl_trait_anywhere_in_the_return_type() {
        let ty: Type = syn::parse2(quote!(Result<Vec<impl Sized>, E>)).expect("a type");
        assert!(find_impl_trait(&ty).is_some());
        let ty: Type = syn::parse2(quote!(Result<Vec<u8>, E>)).expect("a type");
        assert!(find_impl_trait(&ty).is_none());
    }
}
