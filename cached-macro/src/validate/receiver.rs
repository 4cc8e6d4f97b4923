//! The receiver rule: a method says what `self` contributes to the key, and never takes
//! `&mut self` (a hit skips the body, and with it the mutation).

use proc_macro2::Span;
use syn::{GenericArgument, PathArguments, Receiver, Type};

use super::Errors;

/// The receiver rule: a method says what `self` contributes to the key.
pub(super) fn check(
    receiver: &Receiver,
    skip_self: Option<Span>,
    skip_all: bool,
    self_in_key: bool,
    errors: &mut Errors,
) {
    if has_mut_ref(&receiver.ty) {
        errors.spanned(
            receiver,
            "#[redis_cache] cannot cache a `&mut self` method: a hit skips the body, and with it the mutation; take `&self`, or leave the method uncached",
        );
        return;
    }
    match (skip_self, self_in_key) {
        (Some(span), true) => errors.at(
            span,
            "`skip(self)` contradicts the key template, which names fields of `self`: remove one",
        ),
        (None, false) if !skip_all => errors.spanned(
            receiver,
            "`self` is not part of the cache key, so every instance would read the others' entries: add `skip(self)` to share entries across instances, or name the fields that tell instances apart in a key template, like `key = \"{self.tenant}:{id}\"`",
        ),
        _ => {}
    }
}

/// Whether a type holds a `&mut` (`&mut Self`, `Pin<&mut Self>`).
fn has_mut_ref(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => r.mutability.is_some() || has_mut_ref(&r.elem),
        Type::Paren(p) => has_mut_ref(&p.elem),
        Type::Group(g) => has_mut_ref(&g.elem),
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().any(|a| match a {
                GenericArgument::Type(t) => has_mut_ref(t),
                _ => false,
            }),
            _ => false,
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{ToTokens, quote};

    #[test]
    fn mutable_receivers_are_found_behind_wrappers() {
        for (ty, found) in [
            (quote!(&mut Self), true),
            (quote!(Pin<&mut Self>), true),
            (quote!(&Self), false),
            (quote!(Arc<Self>), false),
        ] {
            let ty: Type = syn::parse2(ty).expect("a type");
            assert_eq!(has_mut_ref(&ty), found, "{}", ty.to_token_stream());
        }
    }
}
