//! Expansion: the signature as written, and a body that makes one call into the runtime's
//! `__private` module with the key parts, the options and the original body as an
//! `async move` block; then the companion functions `{name}_key` and `{name}_invalidate`.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Attribute, FnArg, Ident, Signature, Type, Visibility, ext::IdentExt, spanned::Spanned};

use crate::{
    args::{self, Args, Body, Func},
    validate::{self, Companions, KeyPart, Options, Plan, Secs},
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
        .map(|c| companions(&plan, c, &attrs, &vis, &sig));
    let mut sig = sig;
    let (run, http_policy) = match &plan.options.revalidate {
        None => {
            let run = quote_spanned! {ret_span=>
                #select_at_ret.run(#call_at_ret, async move #body).await
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
            let #call = #start #types #(#key)* #vary;
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
    policy
}

fn types_tokens(types: &[TokenStream]) -> Option<TokenStream> {
    (!types.is_empty()).then(|| quote!(.types(&[#(#types),*])))
}

/// One key part. In the getter, arguments are keyed through the probe (an extractor on what
/// it holds); in a companion, `direct` names the parameters that already are the key's value.
fn key_part(part: &KeyPart, private: &TokenStream, direct: Option<&[Ident]>) -> TokenStream {
    let is_direct = |name: &Ident| direct.is_some_and(|d| d.contains(name));
    match part {
        KeyPart::Arg(name) => {
            let span = name.span();
            if is_direct(name) {
                quote_spanned!(span=> .key_arg(#name))
            } else if direct.is_some() {
                quote_spanned!(span=> .key_arg((&&#private::KeyProbe(#name)).__cached_key()))
            } else {
                quote_spanned!(span=> .key_arg((&&#private::KeyProbe(&#name)).__cached_key()))
            }
        }
        KeyPart::Value { root, fields, span } => {
            let root_ident = syn::parse2::<Ident>(root.clone()).ok();
            if !fields.is_empty() {
                quote_spanned!(*span=> .key_value(&#root #fields))
            } else if root_ident.as_ref().is_some_and(is_direct) {
                quote_spanned!(*span=> .key_value(#root))
            } else if direct.is_some() {
                quote_spanned!(*span=> .key_value((&&#private::KeyProbe(#root)).__cached_key()))
            } else {
                quote_spanned!(*span=> .key_value((&&#private::KeyProbe(&#root)).__cached_key()))
            }
        }
        KeyPart::Literal(text) => quote!(.literal(#text)),
    }
}

/// `{name}_key(cache, args…)` and `{name}_invalidate(cache, args…)`: the key of one call and
/// its invalidation, so a writer names the function rather than repeating its key layout.
fn companions(
    plan: &Plan,
    companions: &Companions,
    attrs: &[Attribute],
    vis: &Visibility,
    sig: &Signature,
) -> TokenStream {
    let krate = &plan.options.krate;
    let private = quote!(#krate::__private);
    let local = Span::mixed_site();
    let policy = format_ident!("__CACHED_POLICY", span = local);
    let cache = format_ident!("cache", span = local);
    let name = sig.ident.unraw();
    let key_fn = format_ident!("{}_key", name, span = sig.ident.span());
    let invalidate_fn = format_ident!("{}_invalidate", name, span = sig.ident.span());
    let cfgs = attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let receiver = companions
        .receiver
        .then(|| {
            sig.inputs.iter().find_map(|arg| match arg {
                FnArg::Receiver(r) => {
                    let self_token = r.self_token;
                    Some(quote!(&#self_token,))
                }
                FnArg::Typed(_) => None,
            })
        })
        .flatten();
    let with_fields: Vec<&Ident> = plan
        .key
        .iter()
        .filter_map(|part| match part {
            KeyPart::Value { root, fields, .. } if !fields.is_empty() => companions
                .params
                .iter()
                .map(|(n, _)| n)
                .find(|n| syn::parse2::<Ident>(root.clone()).is_ok_and(|r| r == **n)),
            _ => None,
        })
        .collect();
    let mut direct = Vec::new();
    let params = companions.params.iter().map(|(name, ty)| match ty {
        Some(ty) if with_fields.contains(&name) || !generic_friendly(ty) => {
            let ty = strip_group(ty);
            quote!(#name: &(#ty))
        }
        Some(ty) => {
            direct.push(name.clone());
            quote!(#name: &(impl #private::KeyFor<#ty> + ?::core::marker::Sized))
        }
        // A name bound by a pattern whose type the signature does not show.
        None => {
            direct.push(name.clone());
            quote!(#name: &(impl #private::SerializeTrait + ?::core::marker::Sized))
        }
    });
    let params: Vec<TokenStream> = params.collect();
    let types = types_tokens(&plan.types);
    let key = plan
        .key
        .iter()
        .map(|part| key_part(part, &private, Some(&direct)));
    let key: Vec<TokenStream> = key.collect();
    let prefix = &plan.options.prefix;
    let version = Literal::u32_unsuffixed(plan.options.version);
    let where_clause = &sig.generics.where_clause;
    let generics = &sig.generics.params;
    let generics = (!generics.is_empty()).then(|| quote!(<#generics>));
    let doc_key = format!(
        "The cache key `{name}` reads for these arguments (generated by `#[redis_cache]`)."
    );
    let doc_invalidate = format!(
        "Deletes the cached entry of `{name}` for these arguments; `Ok(false)` when there was none (generated by `#[redis_cache]`)."
    );
    let body = quote! {
        static #policy: #private::Policy = #private::policy(#prefix, 1, 0, 0, #version);
        #[allow(unused_imports)]
        use #private::{KeyLevel0 as _, KeyLevel1 as _, KeyLevel2 as _};
        #private::Call::companion(#cache, &#policy) #types #(#key)*
    };
    // With `vary`, the key also takes the request the headers are read from; the
    // invalidation cannot know every caller's headers and deletes the entries of all of them.
    let vary_params = companions.vary.iter().map(|(name, ty)| {
        let ty = strip_group(ty);
        quote!(#name: &(#ty))
    });
    let vary_params: Vec<TokenStream> = vary_params.collect();
    let call = format_ident!("__cached_call", span = local);
    let vary_parts = plan
        .vary
        .iter()
        .filter(|(_, headers)| !headers.is_empty())
        .map(|(arg, headers)| {
            quote!(let #call = (&&#private::VaryProbe(#arg)).__cached_vary(#call, &[#(#headers),*]);)
        });
    let invalidate = if companions.vary.is_empty() {
        quote!(#body.invalidate().await)
    } else {
        quote!(#body.invalidate_variants().await.map(|n| n > 0))
    };
    let doc_invalidate = if companions.vary.is_empty() {
        doc_invalidate
    } else {
        format!(
            "Deletes the cached entries of `{name}` for these arguments, for every value of the headers it varies on (`SCAN` + `UNLINK`); `Ok(false)` when there were none (generated by `#[redis_cache]`)."
        )
    };
    quote! {
        #(#cfgs)*
        #[doc = #doc_key]
        #[allow(dead_code, clippy::ptr_arg, clippy::extra_unused_type_parameters, clippy::too_many_arguments)]
        #vis fn #key_fn #generics (#receiver #cache: &#krate::Cache, #(#params,)* #(#vary_params),*)
            -> ::core::result::Result<#krate::Key, #krate::CacheError> #where_clause
        {
            #[allow(unused_imports)]
            use #private::{VaryLevel0 as _, VaryLevel1 as _};
            let #call = { #body };
            #(#vary_parts)*
            #call.key()
        }

        #[doc = #doc_invalidate]
        #[allow(dead_code, clippy::ptr_arg, clippy::extra_unused_type_parameters, clippy::too_many_arguments)]
        #vis async fn #invalidate_fn #generics (#receiver #cache: &#krate::Cache, #(#params),*)
            -> ::core::result::Result<bool, #krate::CacheError> #where_clause
        {
            #invalidate
        }
    }
}

/// `.vary(&req, &["authorization"])` for each `vary` source of the getter.
fn vary_tokens(vary: &[(Ident, Vec<syn::LitStr>)]) -> TokenStream {
    vary.iter()
        .filter(|(_, headers)| !headers.is_empty())
        .map(|(arg, headers)| quote_spanned!(arg.span()=> .vary(&#arg, &[#(#headers),*])))
        .collect()
}

/// Whether `impl KeyFor<ty>` can be written: no `impl Trait` and no elided lifetime, which
/// are not allowed in that position.
fn generic_friendly(ty: &Type) -> bool {
    fn walk(tokens: TokenStream, prev_amp: bool) -> bool {
        let mut prev_amp = prev_amp;
        for tree in tokens {
            match &tree {
                proc_macro2::TokenTree::Ident(i) if i == "impl" || i == "dyn" => return false,
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '&' => {
                    prev_amp = true;
                    continue;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '\'' => {
                    prev_amp = false;
                    continue;
                }
                proc_macro2::TokenTree::Ident(i) if i == "_" => return false,
                proc_macro2::TokenTree::Group(g) if !walk(g.stream(), false) => return false,
                _ => {}
            }
            if prev_amp {
                // `&T` without a lifetime.
                return false;
            }
        }
        true
    }
    walk(quote!(#ty), false)
}

fn strip_group(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => strip_group(&g.elem),
        _ => ty,
    }
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
