//! Expansion: the signature as written, and a body that makes one call into
//! `::cached_runtime::__private` with the key parts, the options and the original body as an
//! `async move` block.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::{
    args::{self, Args, Body, Func},
    validate::{self, KeyPart, Plan, Secs},
};

/// The whole attribute: parse, validate, expand. On any error the function is emitted
/// unchanged next to the errors, so a mistake in the attribute gives one message.
pub(crate) fn redis_cache(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse2::<Args>(args);
    let func = args::parse_func(item.clone());
    let expanded = match (args, func) {
        (Ok(args), Ok(func)) => validate::validate(args, &func).map(|plan| expand(plan, func)),
        (Err(mut e), Err(f)) => {
            e.combine(f);
            Err(e)
        }
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    };
    expanded.unwrap_or_else(|e| {
        let errors = e.to_compile_error();
        quote!(#errors #item)
    })
}

fn expand(plan: Plan, func: Func) -> TokenStream {
    let Func {
        attrs,
        vis,
        sig,
        body,
    } = func;
    let Ok(Body {
        brace,
        inner_attrs,
        stmts,
    }) = body
    else {
        // Validation rejects a function without a body; emit the declaration as written.
        return quote!(#(#attrs)* #vis #sig;);
    };
    let private = quote!(::cached_runtime::__private);
    // Generated locals use mixed-site hygiene: the body cannot see them, nor they the body.
    let local = Span::mixed_site();
    let policy = format_ident!("__CACHED_POLICY", span = local);
    let call = format_ident!("__cached_call", span = local);

    let prefix = plan.prefix;
    let ttl = seconds(&plan.ttl, "ttl_secs");
    let null_ttl = plan
        .null_ttl
        .as_ref()
        .map_or_else(|| quote!(0), |s| seconds(s, "null_ttl_secs"));
    let jitter = plan
        .jitter
        .as_ref()
        .map_or_else(|| quote!(0), |s| seconds(s, "jitter_secs"));
    let version = Literal::u32_unsuffixed(plan.version);
    let lock = plan.lock.as_ref().map(|secs| {
        let ms = match secs {
            Secs::Literal(value, span) => {
                let mut literal = Literal::u64_unsuffixed(value.saturating_mul(1000));
                literal.set_span(*span);
                quote!(#literal)
            }
            Secs::Duration(_) => seconds(secs, "lock_ms"),
        };
        quote!(.__with_lock(#ms))
    });

    let start = match plan.cache {
        Some(cache) => {
            let span = cache.span();
            quote_spanned!(span=> #private::Call::with_cache(&(#cache), &#policy))
        }
        None => quote!(#private::Call::new(&#policy)),
    };
    // Each key part carries its argument's span: a missing `Serialize` points there.
    let key = plan.key.iter().map(|part| match part {
        KeyPart::Arg(value, span) => quote_spanned!(*span=> .key_arg(#value)),
        KeyPart::Value(value, span) => quote_spanned!(*span=> .key_value(#value)),
        KeyPart::Literal(text) => quote!(.literal(#text)),
    });

    let ret = plan.ret;
    let ret_span = ret.span();
    let shape = format_ident!("{}", plan.shape.name());
    let shape = if plan.shape.is_actix() {
        quote_spanned!(ret_span=> ::cached_runtime::__private::actix_shape!(#shape))
    } else {
        quote_spanned!(ret_span=> ::cached_runtime::__private::#shape)
    };
    let mut body = TokenStream::new();
    brace.surround(&mut body, |tokens| tokens.extend(quote!(#(#stmts)*)));
    // The call carries the return type's span: a value that is not `Serialize` is reported
    // once, on the return type.
    let call_at_ret = format_ident!("__cached_call", span = local.located_at(ret_span));
    let run = quote_spanned! {ret_span=>
        ::cached_runtime::__private::Returns::<#shape, #ret>::new().run(#call_at_ret, async move #body).await
    };

    quote! {
        #(#attrs)* #vis #sig {
            #(#inner_attrs)*
            static #policy: #private::Policy =
                #private::Policy::__from_macro(#prefix, #ttl, #null_ttl, #jitter, #version)#lock;
            let #call = #start #(#key)*;
            #run
        }
    }
}

/// A duration option as `u64` seconds in a constant context.
fn seconds(secs: &Secs, convert: &str) -> TokenStream {
    match secs {
        Secs::Literal(value, span) => {
            let mut literal = Literal::u64_unsuffixed(*value);
            literal.set_span(*span);
            quote!(#literal)
        }
        Secs::Duration(expr) => {
            let convert = format_ident!("{convert}");
            let span = expr.span();
            quote_spanned!(span=> ::cached_runtime::__private::#convert(#expr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        redis_cache(args, item).to_string()
    }

    #[test]
    fn keys_on_every_argument_but_self_and_skipped_ones() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600, skip(db)),
            quote!(
                async fn get(&self, id: u64, path: web::Path<String>, db: Pool) -> Option<Item> {
                    None
                }
            ),
        );
        assert!(
            out.contains(". key_arg (& id) . key_arg (& * path) ;"),
            "{out}"
        );
        assert!(!out.contains("db)"), "{out}");
        assert!(
            out.contains("Policy :: __from_macro (\"item\" , 600 , 0 , 0 , 0)"),
            "{out}"
        );
        assert!(
            out.contains(
                "Returns :: < :: cached_runtime :: __private :: Optional , Option < Item > >"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_template_becomes_literals_and_values() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600, key = "v1:{id}:{q.page}"),
            quote!(
                async fn get(id: u64, q: web::Query<P>) -> Item {
                    todo!()
                }
            ),
        );
        assert!(
            out.contains(". literal (\"v1:\") . key_value (& id) . literal (\":\") . key_value (& q . page) ;"),
            "{out}"
        );
    }

    #[test]
    fn an_error_keeps_the_function_as_written() {
        let item = quote!(
            fn get(id: u64) -> u64 {
                id
            }
        );
        let out = expand_str(quote!(prefix = "item", ttl = 600), item.clone());
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");
    }

    #[test]
    fn the_body_is_quoted_once() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600),
            quote!(
                async fn get(id: u64) -> u64 {
                    unique_marker(id)
                }
            ),
        );
        assert_eq!(out.matches("unique_marker").count(), 1, "{out}");
    }
}
