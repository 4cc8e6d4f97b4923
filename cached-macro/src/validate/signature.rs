//! The function's form: an `async fn` with a body, not `const` or `extern`, and not one that
//! `#[async_trait]` has already rewritten.

use quote::ToTokens;
use syn::{ReturnType, Type};

use super::{Errors, ty::last_segment};
use crate::args::Func;

/// The rules on the function itself, each error on the token that breaks it.
pub(super) fn check(func: &Func, errors: &mut Errors) {
    let sig = &func.sig;
    if let Some(c) = &sig.constness {
        errors.at(
            c.span,
            "#[redis_cache] cannot be used on a `const fn`: reading the cache is asynchronous I/O",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(
            abi,
            "#[redis_cache] cannot be used on an `extern` fn: remove the ABI, the cached function is a Rust `async fn`",
        );
    }
    if sig.asyncness.is_none() && sig.constness.is_none() && sig.abi.is_none() {
        if returns_boxed_future(&sig.output) {
            errors.at(
                sig.fn_token.span,
                "#[redis_cache] sees a `fn` returning `Pin<Box<dyn Future>>`, as `#[async_trait]` rewrites an `async fn` before inner attributes run: move the body into an inherent `async fn` with #[redis_cache] and call it from the trait method, or drop `#[async_trait]` (an `async fn` in a trait needs no attribute)",
            );
        } else {
            errors.at(
                sig.fn_token.span,
                "#[redis_cache] needs an `async fn`: add `async` before `fn`",
            );
        }
    }
    if let Err(semi) = &func.body {
        errors.at(
            semi.span,
            "#[redis_cache] needs a function body to cache: put it on each implementation of this method, or give the trait method a default body",
        );
    }
}

/// Whether the return type is `Pin<Box<dyn … Future …>>`, what `#[async_trait]` emits.
fn returns_boxed_future(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let Some((pin, args)) = last_segment(ty) else {
        return false;
    };
    pin == "Pin"
        && args.first().is_some_and(|boxed| {
            matches!(last_segment(boxed), Some((b, inner)) if b == "Box"
            && inner.first().is_some_and(|dyn_ty| {
                matches!(dyn_ty, Type::TraitObject(_))
                    && dyn_ty.to_token_stream().to_string().contains("Future")
            }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn async_trait_output_is_recognised() {
        let output: ReturnType = syn::parse2(quote!(
            -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = u64> + Send + 'async_trait>>
        ))
        .expect("a return type");
        assert!(returns_boxed_future(&output));
        let output: ReturnType = syn::parse2(quote!(-> Pin<Box<u64>>)).expect("a return type");
        assert!(!returns_boxed_future(&output));
    }
}
