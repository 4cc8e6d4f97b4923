//! The function the attribute is on, parsed only as far as re-emitting it needs: attributes,
//! visibility and signature as syntax, the body as tokens.

use proc_macro2::TokenStream;
use syn::{
    Attribute, Signature, Token, Visibility, braced,
    parse::{Parse, ParseStream},
    token,
};

/// The function the attribute is on, split so the signature can be re-emitted as written.
pub(crate) struct Func {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    /// `None` for a declaration without a body (`fn f();` in a trait), with the `;`.
    pub(crate) body: Result<Body, Token![;]>,
}

/// A function body: its braces, inner attributes and the rest as tokens, unparsed, so a
/// syntax error in it is reported by rustc as that error.
pub(crate) struct Body {
    pub(crate) brace: token::Brace,
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) tokens: TokenStream,
}

impl Parse for Func {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let body = if input.peek(Token![;]) {
            Err(input.parse()?)
        } else {
            let content;
            let brace = braced!(content in input);
            let inner_attrs = content.call(Attribute::parse_inner)?;
            let tokens = content.parse::<TokenStream>()?;
            Ok(Body {
                brace,
                inner_attrs,
                tokens,
            })
        };
        Ok(Func {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

/// Parses the item, with an error that says what the attribute applies to.
pub(crate) fn parse_func(item: TokenStream) -> syn::Result<Func> {
    syn::parse2::<Func>(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("#[redis_cache] applies to `async fn` items only: {e}"),
        )
    })
}
