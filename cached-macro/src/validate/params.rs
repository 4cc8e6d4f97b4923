//! The function's parameters and the names their patterns bind: what a key, `skip`, `vary`
//! or a template can name, with each name's type where the signature shows it.

use syn::{FnArg, Ident, Pat, PatIdent, Type, ext::IdentExt};

use super::{
    Errors,
    ty::{last_segment, strip_parens},
};
use crate::args::Func;

/// A typed parameter of the function (the receiver is handled apart).
pub(super) struct Param<'a> {
    /// The binding when the pattern is a plain identifier.
    pub(super) name: Option<&'a Ident>,
    pub(super) pat: &'a Pat,
    pub(super) ty: &'a Type,
    /// What the key can be made of: the plain identifier, or every name the pattern binds,
    /// in order (`Path((a, b)): Path<(u64, String)>` binds `a` and `b`).
    pub(super) names: Vec<Name>,
}

/// A name an argument makes visible to the body.
#[derive(Clone)]
pub(super) struct Name {
    pub(super) ident: Ident,
    /// Its type, when the signature shows it.
    pub(super) ty: Option<Type>,
    /// Bound by a pattern, rather than the argument itself.
    pub(super) bound: bool,
}

/// Every typed parameter, in order, with the names it binds.
pub(super) fn of<'a>(func: &'a Func, errors: &mut Errors) -> Vec<Param<'a>> {
    func.sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Receiver(_) => None,
            FnArg::Typed(typed) => {
                let name = match &*typed.pat {
                    Pat::Ident(PatIdent {
                        ident,
                        subpat: None,
                        ..
                    }) => Some(ident),
                    _ => None,
                };
                let names = match name {
                    Some(ident) => vec![Name {
                        ident: ident.clone(),
                        ty: Some((*typed.ty).clone()),
                        bound: false,
                    }],
                    None => {
                        let mut names = Vec::new();
                        bindings(&typed.pat, Some(&typed.ty), &mut names, errors);
                        names
                    }
                };
                Some(Param {
                    name,
                    pat: &typed.pat,
                    ty: &typed.ty,
                    names,
                })
            }
        })
        .collect()
}

/// The names `pat` binds, in order. A name's type is known where the pattern mirrors the type:
/// a one-field tuple struct over a type with one type argument (`Path(id): Path<u64>`), a tuple
/// over a tuple type, a reference over a reference.
fn bindings(pat: &Pat, ty: Option<&Type>, out: &mut Vec<Name>, errors: &mut Errors) {
    let ty = ty.map(strip_parens);
    match pat {
        Pat::Ident(p) => {
            out.push(Name {
                ident: p.ident.clone(),
                ty: ty.cloned(),
                bound: true,
            });
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, ty, out, errors);
            }
        }
        Pat::TupleStruct(p) => {
            let inner = match (p.elems.len(), ty.and_then(last_segment)) {
                (1, Some((_, args))) if args.len() == 1 => Some(args[0]),
                _ => None,
            };
            for elem in &p.elems {
                bindings(elem, inner, out, errors);
            }
        }
        Pat::Tuple(p) => {
            let types = match ty {
                Some(Type::Tuple(t))
                    if t.elems.len() == p.elems.len()
                        && !p.elems.iter().any(|e| matches!(e, Pat::Rest(_))) =>
                {
                    t.elems.iter().map(Some).collect()
                }
                _ => vec![None; p.elems.len()],
            };
            for (elem, ty) in p.elems.iter().zip(types) {
                bindings(elem, ty, out, errors);
            }
        }
        Pat::Reference(p) => {
            let inner = match ty {
                Some(Type::Reference(r)) => Some(&*r.elem),
                _ => None,
            };
            bindings(&p.pat, inner, out, errors);
        }
        Pat::Paren(p) => bindings(&p.pat, ty, out, errors),
        Pat::Struct(p) => {
            for field in &p.fields {
                bindings(&field.pat, None, out, errors);
            }
        }
        Pat::Slice(p) => {
            for elem in &p.elems {
                bindings(elem, None, out, errors);
            }
        }
        // Every alternative binds the same names.
        Pat::Or(p) => {
            if let Some(first) = p.cases.first() {
                bindings(first, None, out, errors);
            }
        }
        Pat::Type(p) => bindings(&p.pat, Some(&p.ty), out, errors),
        Pat::Wild(_) | Pat::Rest(_) | Pat::Lit(_) | Pat::Range(_) | Pat::Path(_) => {}
        _ => errors.spanned(
            pat,
            "#[redis_cache] cannot see the names this argument pattern binds: bind the argument to a name",
        ),
    }
}

/// The names an error can offer instead of one that names nothing.
pub(super) fn arg_names(params: &[Param<'_>]) -> String {
    let names: Vec<String> = params
        .iter()
        .flat_map(|p| &p.names)
        .map(|n| format!("`{}`", n.ident))
        .collect();
    if names.is_empty() {
        "the function has no named arguments".to_owned()
    } else {
        format!("arguments: {}", names.join(", "))
    }
}

/// The argument, or name bound by an argument's pattern, called `name`.
pub(super) fn find<'p>(params: &'p [Param<'_>], name: &str) -> Option<&'p Name> {
    params
        .iter()
        .flat_map(|p| &p.names)
        .find(|n| n.ident.unraw() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::TokenStream;
    use quote::{ToTokens, quote};
    use syn::parse::Parser;

    fn bound(pat: TokenStream, ty: TokenStream) -> Vec<(String, Option<String>)> {
        let pat = Pat::parse_single.parse2(pat).expect("a pattern");
        let ty: Type = syn::parse2(ty).expect("a type");
        let mut names = Vec::new();
        let mut errors = Errors::default();
        bindings(&pat, Some(&ty), &mut names, &mut errors);
        assert!(errors.is_empty());
        names
            .into_iter()
            .map(|n| {
                let ty = n.ty.map(|t| t.to_token_stream().to_string());
                (n.ident.to_string(), ty)
            })
            .collect()
    }

    #[test]
    fn patterns_bind_their_names_in_order_with_the_types_they_mirror() {
        let some = |n: &str, t: &str| (n.to_owned(), Some(t.to_owned()));
        let none = |n: &str| (n.to_owned(), None);
        assert_eq!(
            bound(quote!(Path(id)), quote!(Path<u64>)),
            [some("id", "u64")]
        );
        assert_eq!(
            bound(
                quote!(Path((a, b))),
                quote!(axum::extract::Path<(u64, String)>)
            ),
            [some("a", "u64"), some("b", "String")]
        );
        assert_eq!(
            bound(quote!(&(a, ref mut b)), quote!(&(u8, Vec<u8>))),
            [some("a", "u8"), some("b", "Vec < u8 >")]
        );
        assert_eq!(
            bound(
                quote!(Query(Page { page, lang: l, .. })),
                quote!(Query<Page>)
            ),
            [none("page"), none("l")]
        );
        assert_eq!(bound(quote!((a, ..)), quote!((u8, u8))), [none("a")]);
        assert_eq!(
            bound(quote!(Pair(a, b)), quote!(Pair<u8>)),
            [none("a"), none("b")]
        );
        assert!(bound(quote!(_), quote!(u8)).is_empty());
    }
}
