//! `#[rate_limit]`: parse the options and the function, check every rule in one place, and
//! emit the signature unchanged around one decision of the runtime's limiter.

mod args;
mod expand;

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, FnArg, Lit, Pat, Path, ReturnType, Type, spanned::Spanned};

use self::args::{Func, Options};

/// Where the client comes from.
pub(crate) enum Client {
    /// `key = expr`.
    Key(Expr),
    /// Arguments the runtime reads the peer and forwarded headers from.
    Request {
        peer: syn::Ident,
        headers: Option<syn::Ident>,
    },
}

/// Everything the expansion needs, validated.
pub(crate) struct Plan {
    pub(crate) limiter: Expr,
    pub(crate) client: Client,
    pub(crate) cost: Expr,
    pub(crate) krate: Path,
    pub(crate) ret: Type,
}

/// The whole attribute. On an error the function is emitted unchanged next to it, so one
/// mistake gives one message.
pub(crate) fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    let options = syn::parse2::<Options>(args);
    let func = syn::parse2::<Func>(item.clone()).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("#[rate_limit] applies to `async fn` items only: {e}"),
        )
    });
    let planned = match (options, func) {
        (Ok(options), Ok(func)) => validate(options, &func).map(|plan| expand::expand(plan, func)),
        (Err(mut e), Err(f)) => {
            e.combine(f);
            Err(e)
        }
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    };
    planned.unwrap_or_else(|e| {
        let errors = e.to_compile_error();
        quote!(#errors #item)
    })
}

/// The last segment of a type's path, for recognising request arguments by type.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Reference(r) => type_name(&r.elem),
        Type::Group(g) => type_name(&g.elem),
        Type::Paren(p) => type_name(&p.elem),
        _ => None,
    }
}

fn validate(options: Options, func: &Func) -> syn::Result<Plan> {
    let mut errors: Vec<syn::Error> = Vec::new();
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "#[rate_limit] needs an `async fn`: the decision is a Redis round trip",
        ));
    }
    let ret: Option<Type> = match &sig.output {
        ReturnType::Default => {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                "#[rate_limit] needs a return type that can answer a refusal, like \
                 `HttpResponse`, `Result<HttpResponse, E>` or `Limited<T>`",
            ));
            None
        }
        ReturnType::Type(_, ty) if matches!(**ty, Type::ImplTrait(_)) => {
            errors.push(syn::Error::new(
                ty.span(),
                "#[rate_limit] cannot answer a refusal as an `impl Trait`: return a type \
                 (`HttpResponse`, `Response`) or wrap it, `Limited<T>`",
            ));
            None
        }
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };
    let Some((_, limiter)) = options.limiter else {
        errors.push(syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[rate_limit] needs `limiter = …`: the `RateLimiter` to decide with, like \
             `limiter = state.limiter`",
        ));
        return Err(combine(errors));
    };
    if let Some((_, Expr::Lit(lit))) = &options.cost
        && let Lit::Int(int) = &lit.lit
        && int.base10_parse::<u64>().is_ok_and(|n| n == 0)
    {
        errors.push(syn::Error::new(
            int.span(),
            "`cost = 0` charges nothing and limits nothing; use at least 1",
        ));
    }
    let client = match options.key {
        Some((_, key)) => Some(Client::Key(key)),
        None => {
            let mut peer = None;
            let mut headers = None;
            for input in &sig.inputs {
                let FnArg::Typed(arg) = input else { continue };
                // An Actix request gives both; axum's peer and headers come apart.
                let (is_peer, is_headers) = match type_name(&arg.ty).as_deref() {
                    Some("HttpRequest") => (true, true),
                    Some("ConnectInfo") => (true, false),
                    Some("HeaderMap") => (false, true),
                    _ => continue,
                };
                let Pat::Ident(ident) = &*arg.pat else {
                    errors.push(syn::Error::new(
                        arg.pat.span(),
                        "#[rate_limit] reads the client from this argument: bind it to a name \
                         (`info: ConnectInfo<SocketAddr>`), or give `key = …`",
                    ));
                    continue;
                };
                if is_peer {
                    peer = Some(ident.ident.clone());
                }
                if is_headers {
                    headers = Some(ident.ident.clone());
                }
            }
            match peer {
                Some(peer) => Some(Client::Request { peer, headers }),
                None => {
                    errors.push(syn::Error::new(
                        sig.ident.span(),
                        "#[rate_limit] needs to know the client: take an `HttpRequest` (Actix) \
                         or a `ConnectInfo<SocketAddr>` (axum) argument, or give `key = …`",
                    ));
                    None
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(combine(errors));
    }
    let (Some(client), Some(ret)) = (client, ret) else {
        return Err(syn::Error::new(sig.ident.span(), "invalid #[rate_limit]"));
    };
    Ok(Plan {
        limiter,
        client,
        cost: options
            .cost
            .map_or_else(|| syn::parse_quote!(1), |(_, cost)| cost),
        krate: options
            .krate
            .map_or_else(|| syn::parse_quote!(::cached_runtime), |(_, path)| path),
        ret,
    })
}

fn combine(errors: Vec<syn::Error>) -> syn::Error {
    let mut errors = errors.into_iter();
    let mut first = errors.next().unwrap_or_else(|| {
        syn::Error::new(proc_macro2::Span::call_site(), "invalid #[rate_limit]")
    });
    for e in errors {
        first.combine(e);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(args: TokenStream, item: TokenStream) -> String {
        let options = syn::parse2::<Options>(args).expect("options parse");
        let func = syn::parse2::<Func>(item).expect("function parses");
        match validate(options, &func) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn a_sync_fn_and_a_missing_client_are_both_reported() {
        let e = error(
            quote!(limiter = L),
            quote!(
                fn f(id: u64) -> HttpResponse {
                    todo!()
                }
            ),
        );
        assert!(e.contains("needs an `async fn`"), "{e}");
        assert!(e.contains("needs to know the client"), "{e}");
    }

    #[test]
    fn a_request_argument_or_a_key_names_the_client() {
        let options = syn::parse2::<Options>(quote!(limiter = L)).expect("parse");
        let func = syn::parse2::<Func>(quote!(
            async fn f(req: actix_web::HttpRequest) -> HttpResponse {
                todo!()
            }
        ))
        .expect("parse");
        assert!(matches!(
            validate(options, &func).map(|p| p.client),
            Ok(Client::Request { .. })
        ));
        let options = syn::parse2::<Options>(quote!(limiter = L, key = "all")).expect("parse");
        let func = syn::parse2::<Func>(quote!(
            async fn f() -> HttpResponse {
                todo!()
            }
        ))
        .expect("parse");
        assert!(matches!(
            validate(options, &func).map(|p| p.client),
            Ok(Client::Key(_))
        ));
    }

    #[test]
    fn impl_trait_returns_zero_costs_and_destructured_requests_are_rejected() {
        let e = error(
            quote!(limiter = L, key = "k", cost = 0),
            quote!(
                async fn f() -> impl Responder {
                    todo!()
                }
            ),
        );
        assert!(e.contains("`impl Trait`"), "{e}");
        assert!(e.contains("`cost = 0`"), "{e}");
        let e = error(
            quote!(limiter = L),
            quote!(
                async fn f(ConnectInfo(addr): ConnectInfo<SocketAddr>) -> Response {
                    todo!()
                }
            ),
        );
        assert!(e.contains("bind it to a name"), "{e}");
    }
}
