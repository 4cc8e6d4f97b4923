//! Expansion: the signature as written, and a body that decides first (returning the refusal
//! as the function's own return type), then runs the original body as an `async move` block
//! and adds the decision's fields to its answer.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::{Client, Plan, args::Func};

pub(crate) fn expand(plan: Plan, func: Func) -> TokenStream {
    let Func {
        attrs,
        vis,
        sig,
        brace,
        inner_attrs,
        body,
    } = func;
    let krate = &plan.krate;
    let private = quote!(#krate::ratelimit::__macro);
    // Generated locals use mixed-site hygiene: the body cannot see them, nor they the body.
    let local = Span::mixed_site();
    let limiter = format_ident!("__rl_limiter", span = local);
    let source = format_ident!("__rl_source", span = local);
    let key = format_ident!("__rl_key", span = local);
    let decision = format_ident!("__rl_decision", span = local);
    let answer = format_ident!("__rl_answer", span = local);

    let limiter_expr = &plan.limiter;
    // A value that is no limiter is reported on the expression; bound first, so a temporary
    // in it (`&state.limiter`) lives as long as the decision needs it.
    let limiter_init = quote_spanned!(limiter_expr.span()=>
        let #source = &(#limiter_expr);
        let #limiter = #private::limiter(#source);
    );
    let key_init = match &plan.client {
        Client::Key(expr) => quote_spanned!(expr.span()=> let #key = #private::key(&(#expr));),
        Client::Request { peer, headers } => {
            let headers = match headers {
                Some(h) => {
                    quote_spanned!(h.span()=> ::core::option::Option::Some(#private::headers(&#h)))
                }
                None => quote!(::core::option::Option::None),
            };
            let peer = quote_spanned!(peer.span()=> #private::peer(&#peer));
            quote!(let #key = #private::client(#limiter, #peer, #headers);)
        }
    };
    let cost = &plan.cost;
    let cost = quote_spanned!(cost.span()=> #private::cost(#cost));
    let ret = &plan.ret;
    // The trait bound is checked on the return type: a type that cannot answer a refusal is
    // reported there, once.
    let respond = quote_spanned!(ret.span()=> <#ret as #private::LimitResponse>);
    let mut block = TokenStream::new();
    brace.surround(&mut block, |out| out.extend(body));
    quote! {
        #(#attrs)* #vis #sig {
            #(#inner_attrs)*
            #limiter_init
            #key_init
            let #decision = #limiter.check(&#key, #cost).await;
            if !#decision.is_allowed() {
                return #respond::refused(&#decision);
            }
            let #answer = #private::pin_output::<#ret, _>(async move #block).await;
            #respond::allowed(#answer, &#decision)
        }
    }
}
