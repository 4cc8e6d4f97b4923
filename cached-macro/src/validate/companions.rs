//! What the companion functions `{name}_key` and `{name}_invalidate` take: the key's
//! arguments with their types, `&self` when the key names its fields, and the `vary` sources.

use syn::{Ident, LitStr, Type, ext::IdentExt};

use super::{key::Keyed, params::Param, params::find};

/// What `{name}_key` and `{name}_invalidate` take besides the cache.
pub(crate) struct Companions {
    /// `&self` when the key names `self` fields.
    pub(crate) receiver: bool,
    /// The arguments `vary` reads headers from, with their types: `{name}_key` takes them,
    /// and `{name}_invalidate` deletes the entries of every header value.
    pub(crate) vary: Vec<(Ident, Type)>,
    /// Each argument (or name bound by an argument's pattern) the key is made of, once, in
    /// the order it first appears, with its type when the signature shows it.
    pub(crate) params: Vec<(Ident, Option<Type>)>,
}

/// The companions' inputs.
pub(super) fn of(params: &[Param<'_>], keyed: &Keyed, vary: &[(Ident, Vec<LitStr>)]) -> Companions {
    Companions {
        receiver: keyed.self_in_key,
        vary: vary
            .iter()
            .filter(|(_, headers)| !headers.is_empty())
            .filter_map(|(arg, _)| {
                let name = find(params, &arg.unraw().to_string())?;
                Some((name.ident.clone(), name.ty.clone()?))
            })
            .collect(),
        params: keyed
            .roots
            .iter()
            .filter_map(|name| find(params, &name.unraw().to_string()))
            .map(|n| (n.ident.clone(), n.ty.clone()))
            .collect(),
    }
}

/// Names bound by patterns whose type was read off the pattern (`Path(id): Path<u64>` gives
/// `id: u64`): the getter asserts each, so a companion never takes the wrong type.
pub(super) fn binding_types(params: &[Param<'_>], keyed: &Keyed) -> Vec<(Ident, Type)> {
    keyed
        .roots
        .iter()
        .filter_map(|name| find(params, &name.unraw().to_string()))
        .filter(|n| n.bound)
        .filter_map(|n| Some((n.ident.clone(), n.ty.clone()?)))
        .collect()
}
