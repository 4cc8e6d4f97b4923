//! Return shapes: a function must return a value to store and decode into, so not `()` and
//! not `impl Trait`. Which shape stores it is selected from the type by the runtime's traits.

use syn::{ReturnType, Type};

use super::{Errors, ty::find_impl_trait};
use crate::args::Func;

/// The return type, or errors for returns that cannot be cached.
pub(super) fn return_type(func: &Func, errors: &mut Errors) -> Option<Type> {
    let ty = match &func.sig.output {
        ReturnType::Default => {
            errors.at(
                func.sig.ident.span(),
                "a #[redis_cache] function must return the value to cache; this one returns `()`",
            );
            return None;
        }
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Type::Tuple(t) = ty
        && t.elems.is_empty()
    {
        errors.spanned(
            ty,
            "a #[redis_cache] function must return the value to cache, not `()`",
        );
        return None;
    }
    if let Some(impl_trait) = find_impl_trait(ty) {
        errors.spanned(
            impl_trait,
            "#[redis_cache] needs a concrete return type to decode cached values into, not `impl Trait`",
        );
        return None;
    }
    Some(ty.clone())
}
