//! Parsing `#[rate_limit(...)]`: its options and the function, as written. Every value
//! keeps its tokens so later errors point at them.

use proc_macro2::{Span, TokenStream};
use syn::{
    Attribute, Expr, LitStr, Path, Signature, Token, Visibility, braced,
    parse::{Parse, ParseStream},
    token,
};

mod kw {
    syn::custom_keyword!(limiter);
    syn::custom_keyword!(key);
    syn::custom_keyword!(cost);
}

/// Every option, in the order the documentation lists them.
pub(crate) const OPTIONS: &[&str] = &["limiter", "key", "cost", "crate"];

/// The options of one `#[rate_limit(...)]`, each with the span of its name.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) limiter: Option<(Span, Expr)>,
    pub(crate) key: Option<(Span, Expr)>,
    pub(crate) cost: Option<(Span, Expr)>,
    pub(crate) krate: Option<(Span, Path)>,
}

fn set<T>(slot: &mut Option<(Span, T)>, span: Span, name: &str, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(span, format!("`{name}` is given twice")));
    }
    *slot = Some((span, value));
    Ok(())
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = Options::default();
        while !input.is_empty() {
            let look = input.lookahead1();
            if look.peek(kw::limiter) {
                let span = input.parse::<kw::limiter>()?.span;
                input.parse::<Token![=]>()?;
                set(&mut options.limiter, span, "limiter", input.parse()?)?;
            } else if look.peek(kw::key) {
                let span = input.parse::<kw::key>()?.span;
                input.parse::<Token![=]>()?;
                set(&mut options.key, span, "key", input.parse()?)?;
            } else if look.peek(kw::cost) {
                let span = input.parse::<kw::cost>()?.span;
                input.parse::<Token![=]>()?;
                set(&mut options.cost, span, "cost", input.parse()?)?;
            } else if look.peek(Token![crate]) {
                let span = input.parse::<Token![crate]>()?.span;
                input.parse::<Token![=]>()?;
                let path = if input.peek(LitStr) {
                    input.parse::<LitStr>()?.parse::<Path>()?
                } else {
                    input.parse::<Path>()?
                };
                set(&mut options.krate, span, "crate", path)?;
            } else if input.peek(syn::Ident) {
                let ident: syn::Ident = input.parse()?;
                return Err(syn::Error::new(
                    ident.span(),
                    format!(
                        "unknown option `{ident}`; the options are: {}",
                        OPTIONS.join(", ")
                    ),
                ));
            } else {
                return Err(look.error());
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(options)
    }
}

/// The function as written, its body kept as tokens.
pub(crate) struct Func {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) brace: token::Brace,
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) body: TokenStream,
}

impl Parse for Func {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let content;
        let brace = braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let body = content.parse()?;
        Ok(Func {
            attrs,
            vis,
            sig,
            brace,
            inner_attrs,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn error(tokens: TokenStream) -> String {
        match syn::parse2::<Options>(tokens) {
            Ok(_) => panic!("expected a parse error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn options_parse_with_their_values() {
        let options: Options = syn::parse2(quote!(
            limiter = state.limiter,
            key = user.id,
            cost = 2,
            crate = "x::y"
        ))
        .expect("valid");
        assert!(options.limiter.is_some());
        assert!(options.key.is_some());
        assert!(options.cost.is_some());
        assert!(options.krate.is_some());
    }

    #[test]
    fn unknown_and_repeated_options_are_errors_that_teach() {
        assert_eq!(
            error(quote!(limit = x)),
            "unknown option `limit`; the options are: limiter, key, cost, crate"
        );
        assert_eq!(error(quote!(cost = 1, cost = 2)), "`cost` is given twice");
    }
}
