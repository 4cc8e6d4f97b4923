//! Expansion: the signature as written, and a body that makes one call into the runtime's
//! `__private` module with the key parts, the options and the original body as an
//! `async move` block; then the companion functions `{name}_key` and `{name}_invalidate`
//! (`companions`), from the key parts both share (`parts`).

mod companions;
mod parts;
mod stale;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{ext::IdentExt, spanned::Spanned};

use self::parts::{generic_friendly, key_part, strip_group, tag_tokens, types_tokens, vary_tokens};

use crate::{
    args::{self, Args, Body, Func},
    validate::{self, Options, Plan, Secs},
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
        tokens,
    }) = body
    else {
        // Validation rejects a function without a body; emit the declaration as written.
        return quote!(#(#attrs)* #vis #sig;);
    };
    let krate = &plan.options.krate;
    let private = quote!(#krate::__private);
    // Generated locals use mixed-site hygiene: the body cannot see them, nor they the body.
    let local = Span::mixed_site();
    let policy = format_ident!("__CACHED_POLICY", span = local);
    let site = format_ident!("__CACHED_SITE", span = local);
    let call = format_ident!("__cached_call", span = local);
    let select = format_ident!("__cached_select", span = local);

    let prefix = &plan.options.prefix;
    // The runtime's rules, evaluated at compile time: a bad prefix or template fails the
    // build with the rule's own message, on the literal.
    let prefix_check =
        quote_spanned!(prefix.span()=> const _: () = #private::check_prefix(#prefix););
    let template_check = plan
        .template
        .as_ref()
        .map(|t| quote_spanned!(t.span()=> const _: () = #private::check_template(#t);));
    let policy_value = policy_tokens(&plan.options, &private);
    let fn_name = sig.ident.unraw().to_string();

    let start = match &plan.options.cache {
        Some(cache) => {
            let span = cache.span();
            quote_spanned!(span=> #private::Call::with_cache(&(#cache), &#policy, &#site))
        }
        None => quote!(#private::Call::new(&#policy, &#site)),
    };
    let types = types_tokens(&plan.types);
    let key = plan.key.iter().map(|part| key_part(part, &private, None));
    let vary = vary_tokens(&plan.vary);
    let tags = tag_tokens(&plan.tags, &private, None);
    // Tag templates follow the key template's rule, checked the same way.
    let tag_checks = plan.tags.iter().map(|tag| {
        let lit = &tag.lit;
        quote_spanned!(lit.span()=> const _: () = #private::check_template(#lit);)
    });
    // The header names, checked by the runtime's rule at compile time, on each literal.
    let header_checks = plan
        .vary
        .iter()
        .flat_map(|(_, headers)| headers)
        .map(|h| quote_spanned!(h.span()=> const _: () = #private::check_header_name(#h);));
    // A request left out of the key warns (a deprecation note), on the argument.
    let risks = plan
        .unkeyed
        .iter()
        .map(|name| quote_spanned!(name.span()=> (&&#private::RiskProbe(&#name)).__cached_risk();));
    // The companions take these types: a pattern that does not bind what it seems to fails
    // here, on the type.
    let binding_checks = plan
        .binding_types
        .iter()
        .filter(|(_, ty)| generic_friendly(ty))
        .map(|(name, ty)| {
            let ty = strip_group(ty);
            quote_spanned!(ty.span()=> let _: &(#ty) = &#name;)
        });

    let ret = &plan.ret;
    let ret_span = ret.span();
    let selected = match &plan.options.shape {
        Some(shape) => {
            let span = shape.span();
            quote_spanned!(span=> #private::Selected::<#shape, #ret>::NEW)
        }
        None => quote_spanned!(ret_span=>
            (&&&&#private::Probe::<#ret>::NEW).__cached_select()
        ),
    };
    let mut body = TokenStream::new();
    brace.surround(&mut body, |out| out.extend(tokens));
    // The call carries the return type's span: a value that is not `Serialize` is reported
    // once, on the return type.
    let call_at_ret = format_ident!("__cached_call", span = local.located_at(ret_span));
    let select_at_ret = format_ident!("__cached_select", span = local.located_at(ret_span));
    let companions = plan
        .companions
        .as_ref()
        .map(|c| companions::emit(&plan, c, &attrs, &vis, &sig));
    let mut sig = sig;
    let (run, http_policy) = match &plan.options.revalidate {
        None => {
            let method = stale::run_method(plan.options.stale.as_ref());
            let run = quote_spanned! {ret_span=>
                #select_at_ret.#method(#call_at_ret, async move #body).await
            };
            (run, None)
        }
        Some(cache_control) => {
            // The handler takes the request's conditions first (axum wants a body extractor
            // last) and answers the revalidated form of its return type.
            let http = format_ident!("__cached_http", span = local);
            let http_static = format_ident!("__CACHED_HTTP", span = local);
            let at = usize::from(sig.receiver().is_some());
            sig.inputs
                .insert(at, syn::parse_quote!(#http: #krate::http::Conditional));
            sig.output = syn::parse_quote_spanned!(ret_span=> -> #krate::http::Revalidated<#ret>);
            let policy = match cache_control {
                Some(lit) => {
                    let check = quote_spanned!(lit.span()=> const _: () = #private::check_cache_control(#lit););
                    quote!(#check #lit)
                }
                None => quote!(#krate::http::DEFAULT_CACHE_CONTROL),
            };
            let vary_names = plan
                .vary
                .iter()
                .flat_map(|(_, headers)| headers)
                .map(syn::LitStr::value)
                .collect::<Vec<_>>()
                .join(", ");
            let http_policy = quote! {
                static #http_static: #private::HttpPolicy = #private::http_policy({ #policy }, #vary_names);
            };
            let run = quote_spanned! {ret_span=>
                #select_at_ret.check_json_response();
                #select_at_ret.revalidate(#call_at_ret, #http, &#http_static, async move #body).await
            };
            (run, Some(http_policy))
        }
    };

    quote! {
        #(#attrs)* #vis #sig {
            #(#inner_attrs)*
            #prefix_check
            #template_check
            #(#tag_checks)*
            #[allow(unused_imports)]
            use #private::{KeyLevel0 as _, KeyLevel1 as _, KeyLevel2 as _, Level0 as _, Level1 as _, Level2 as _, Level3 as _};
            #(#binding_checks)*
            #(#header_checks)*
            static #policy: #private::Policy = #policy_value;
            #http_policy
            static #site: #private::Site = #private::site(::core::module_path!(), #fn_name);
            #[allow(unused_imports)]
            use #private::{RiskLevel0 as _, RiskLevel1 as _};
            #(#risks)*
            let #call = #start #types #(#key)* #vary #tags;
            let #select = #selected;
            #run
        }
        #companions
    }
}

/// The function's `Policy` as a constant expression, built by the runtime's `const fn`s.
fn policy_tokens(options: &Options, private: &TokenStream) -> TokenStream {
    let prefix = &options.prefix;
    let ttl = seconds(&options.ttl, "ttl_secs", private);
    let null_ttl = options
        .null_ttl
        .as_ref()
        .map_or_else(|| quote!(0), |s| seconds(s, "null_ttl_secs", private));
    let jitter = options
        .jitter
        .as_ref()
        .map_or_else(|| quote!(0), |s| seconds(s, "jitter_secs", private));
    let version = Literal::u32_unsuffixed(options.version);
    let mut policy = quote!(#private::policy(#prefix, #ttl, #null_ttl, #jitter, #version));
    if let Some(secs) = &options.lock {
        let ms = match secs {
            Secs::Literal(value, span) => {
                let mut literal = Literal::u64_unsuffixed(value.saturating_mul(1000));
                literal.set_span(*span);
                quote!(#literal)
            }
            Secs::Duration(_) => seconds(secs, "lock_ms", private),
        };
        policy = quote!(#private::with_lock(#policy, #ms));
    }
    if !options.near {
        policy = quote!(#private::with_near(#policy, false));
    }
    if let Some(stale) = &options.stale {
        policy = stale::wrap_policy(policy, stale, private);
    }
    policy
}

/// A duration option as `u64` seconds in a constant context.
fn seconds(secs: &Secs, convert: &str, private: &TokenStream) -> TokenStream {
    match secs {
        Secs::Literal(value, span) => {
            let mut literal = Literal::u64_unsuffixed(*value);
            literal.set_span(*span);
            quote!(#literal)
        }
        Secs::Duration(expr) => {
            let convert = format_ident!("{convert}");
            let span = expr.span();
            quote_spanned!(span=> #private::#convert(#expr))
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
    fn keys_on_every_argument_but_skipped_ones_through_the_probe() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600, skip(self, db)),
            quote!(
                async fn get(&self, id: u64, path: web::Path<String>, db: Pool) -> Option<Item> {
                    None
                }
            ),
        );
        assert!(
            out.contains(". key_arg ((&& :: cached_runtime :: __private :: KeyProbe (& id)) . __cached_key ()) . key_arg ((&& :: cached_runtime :: __private :: KeyProbe (& path)) . __cached_key ()) ;"),
            "{out}"
        );
        assert!(!out.contains("KeyProbe (& db)"), "{out}");
        assert!(
            out.contains(
                "static __CACHED_POLICY : :: cached_runtime :: __private :: Policy = :: cached_runtime :: __private :: policy (\"item\" , 600 , 0 , 0 , 0) ;"
            ),
            "{out}"
        );
        assert!(
            out.contains(". types (& [:: core :: any :: type_name :: < Self > ()])"),
            "{out}"
        );
        assert!(!out.contains("fn get_key (& self ,"), "{out}");
        assert!(
            out.contains("fn get_key (cache : & :: cached_runtime :: Cache"),
            "{out}"
        );
    }

    #[test]
    fn lock_and_near_wrap_the_policy_in_the_private_const_fns() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600, lock = 3, near = false),
            quote!(
                async fn get(id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(
            out.contains(":: cached_runtime :: __private :: with_near (:: cached_runtime :: __private :: with_lock (:: cached_runtime :: __private :: policy (\"item\" , 600 , 0 , 0 , 0) , 3000) , false) ;"),
            "{out}"
        );
        assert!(
            out.contains(
                ":: cached_runtime :: __private :: site (:: core :: module_path ! () , \"get\")"
            ),
            "{out}"
        );
        assert!(!out.contains("__from_macro"), "{out}");
        assert!(!out.contains("__with_"), "{out}");
    }

    #[test]
    fn stale_options_wrap_the_policy_and_a_background_body_runs_through_run_refresh() {
        let out = expand_str(
            quote!(
                prefix = "item",
                ttl = 600,
                stale = 300,
                fail_safe,
                stale_while_revalidate,
                hard_timeout = 5
            ),
            quote!(
                async fn get(id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(
            out.contains(":: cached_runtime :: __private :: with_stale (:: cached_runtime :: __private :: policy (\"item\" , 600 , 0 , 0 , 0) , 300 , true , 0 , true , 0 , 5000 , false) ;"),
            "{out}"
        );
        assert!(out.contains(". run_refresh ("), "{out}");
        let inline = expand_str(
            quote!(prefix = "item", ttl = 600, stale = 300, fail_safe),
            quote!(
                async fn get(id: &str) -> u64 {
                    1
                }
            ),
        );
        assert!(inline.contains(". run ("), "{inline}");
    }

    #[test]
    fn a_background_stale_option_on_a_revalidating_handler_is_an_error() {
        let out = expand_str(
            quote!(
                prefix = "item",
                ttl = 600,
                revalidate,
                stale = 300,
                stale_while_revalidate
            ),
            quote!(
                async fn get(id: u64) -> Json<u64> {
                    Json(id)
                }
            ),
        );
        assert!(
            out.contains("`stale_while_revalidate` cannot be used with `revalidate`"),
            "{out}"
        );
    }

    #[test]
    fn revalidate_builds_its_http_policy_with_the_private_const_fn() {
        let out = expand_str(
            quote!(
                prefix = "item",
                ttl = 600,
                revalidate,
                vary(req = ["authorization"])
            ),
            quote!(
                async fn get(req: HttpRequest, id: u64) -> Json<u64> {
                    Json(id)
                }
            ),
        );
        assert!(
            out.contains(":: cached_runtime :: __private :: http_policy ({ :: cached_runtime :: http :: DEFAULT_CACHE_CONTROL } , \"authorization\")"),
            "{out}"
        );
        assert!(!out.contains("HttpPolicy :: __new"), "{out}");
    }

    #[test]
    fn a_template_becomes_literals_and_values_and_is_checked_at_compile_time() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600, key = "v1:{id}:{q.page}"),
            quote!(
                async fn get(id: u64, q: web::Query<P>) -> Item {
                    todo!()
                }
            ),
        );
        assert!(
            out.contains(". literal (\"v1:\") . key_value ((&& :: cached_runtime :: __private :: KeyProbe (& id)) . __cached_key ()) . literal (\":\") . key_value (& q . page) ;"),
            "{out}"
        );
        assert!(
            out.contains("check_template (\"v1:{id}:{q.page}\")"),
            "{out}"
        );
        assert!(out.contains("check_prefix (\"item\")"), "{out}");
    }

    #[test]
    fn generic_parameters_reaching_the_return_type_go_into_the_key() {
        let out = expand_str(
            quote!(prefix = "get", ttl = 600),
            quote!(
                async fn get<T: DeserializeOwned, K: Serialize>(id: K) -> Option<T> {
                    None
                }
            ),
        );
        assert!(
            out.contains(". types (& [:: core :: any :: type_name :: < T > ()])"),
            "{out}"
        );
    }

    #[test]
    fn the_crate_option_replaces_the_runtime_path() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600, crate = "facade::cache"),
            quote!(
                async fn get(id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(!out.contains("cached_runtime"), "{out}");
        assert!(
            out.contains("facade :: cache :: __private :: Call :: new"),
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
    fn the_body_is_quoted_once_and_kept_as_tokens() {
        let out = expand_str(
            quote!(prefix = "item", ttl = 600),
            quote!(
                async fn get(id: u64) -> u64 {
                    unique_marker(id) let let
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert_eq!(out.matches("unique_marker").count(), 1, "{out}");
    }
}
