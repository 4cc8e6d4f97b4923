//! Parsing: the attribute's options (here) and the function it is applied to (`func`), as
//! written.
//!
//! Nothing here judges whether the options make sense together; [`crate::validate`] does.
//! Every value keeps its tokens, so later errors can point at them.

mod func;
mod stale;

pub(crate) use self::func::{Body, Func, parse_func};
pub(crate) use self::stale::StaleArgs;

use proc_macro2::Span;
use syn::{
    Expr, ExprLit, ExprUnary, Ident, Lit, LitBool, LitInt, LitStr, Path, Token, bracketed,
    ext::IdentExt,
    parenthesized,
    parse::{Parse, ParseStream},
    punctuated::Punctuated,
    token,
};

mod kw {
    syn::custom_keyword!(prefix);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(null_ttl);
    syn::custom_keyword!(jitter);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(skip_all);
    syn::custom_keyword!(key);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(version);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(shape);
    syn::custom_keyword!(companions);
    syn::custom_keyword!(vary);
    syn::custom_keyword!(revalidate);
    syn::custom_keyword!(near);
    syn::custom_keyword!(tags);
    // The name `near` had before; only to say so.
    syn::custom_keyword!(local);
}

/// Every option, in the order the documentation lists them.
pub(crate) const OPTIONS: &[&str] = &[
    "prefix",
    "ttl",
    "null_ttl",
    "jitter",
    "skip",
    "skip_all",
    "key",
    "cache",
    "version",
    "lock",
    "shape",
    "companions",
    "crate",
    "vary",
    "revalidate",
    "near",
    "tags",
];

/// The options of one `#[redis_cache(...)]`, each with the span of its name.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) prefix: Option<(Span, LitStr)>,
    pub(crate) ttl: Option<(Span, Seconds)>,
    pub(crate) null_ttl: Option<(Span, Seconds)>,
    pub(crate) jitter: Option<(Span, Seconds)>,
    pub(crate) skip: Option<(Span, Skip)>,
    pub(crate) key: Option<(Span, LitStr)>,
    pub(crate) cache: Option<(Span, Expr)>,
    pub(crate) version: Option<(Span, LitInt)>,
    pub(crate) lock: Option<(Span, Lock)>,
    /// `shape = path::To::Shape`: the shape instead of the one selected from the return type.
    pub(crate) shape: Option<(Span, Path)>,
    /// `companions = false`: no `{name}_key` / `{name}_invalidate` functions.
    pub(crate) companions: Option<(Span, LitBool)>,
    /// `crate = "path"` (or a path): the runtime crate, instead of `::cached_runtime`.
    pub(crate) krate: Option<(Span, Path)>,
    /// `vary(req = ["authorization"])`: request headers, read from an argument, in the key.
    pub(crate) vary: Option<(Span, Vec<Vary>)>,
    /// `revalidate`, or `revalidate = "public, max-age"`: answer HTTP revalidation from the
    /// cache, with this `Cache-Control` policy when given.
    pub(crate) revalidate: Option<(Span, Option<LitStr>)>,
    /// `near = false`: never answered from the cache's near cache.
    pub(crate) near: Option<(Span, LitBool)>,
    /// `stale = 600`, `fail_safe`, … (`stale.rs`).
    pub(crate) stale: StaleArgs,
    /// `tags = ["category:{category}"]`: templates of the tags entries carry.
    pub(crate) tags: Option<(Span, Vec<LitStr>)>,
}

/// `req = ["authorization", "accept-language"]` in `vary(...)`: the argument the headers are
/// read from, and their names.
pub(crate) struct Vary {
    pub(crate) arg: Ident,
    pub(crate) headers: Vec<LitStr>,
}

impl Parse for Vary {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let arg = input.call(Ident::parse_any)?;
        if !input.peek(Token![=]) {
            return Err(input.error(format!(
                "expected `=` after `{arg}`, like `vary({arg} = [\"authorization\"])`"
            )));
        }
        input.parse::<Token![=]>()?;
        if !input.peek(token::Bracket) {
            return Err(input.error(format!(
                "expected a list of header names, like `vary({arg} = [\"authorization\"])`"
            )));
        }
        let content;
        bracketed!(content in input);
        let headers = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
        Ok(Vary {
            arg,
            headers: headers.into_iter().collect(),
        })
    }
}

/// `lock = true | false`, or the lock's TTL like a duration option.
pub(crate) enum Lock {
    Flag(LitBool),
    Ttl(Seconds),
}

/// A duration option: an integer literal of seconds, or an expression of type `Duration`.
pub(crate) enum Seconds {
    /// `ttl = 600`, or something that looks like a number but is not a valid one (`-1`, `1.5`,
    /// `"600"`), which validation rejects.
    Literal(Expr),
    /// `ttl = ITEM_TTL`, `ttl = Duration::from_secs(60)`.
    Duration(Expr),
}

/// `skip(a, b)` or `skip_all`.
pub(crate) enum Skip {
    Args(Punctuated<Ident, Token![,]>),
    All,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let look = input.lookahead1();
            if look.peek(kw::prefix) {
                let span = input.parse::<kw::prefix>()?.span;
                let value = parse_value(input, "prefix", "prefix = \"item\"")?;
                set(&mut args.prefix, "prefix", span, value)?;
            } else if look.peek(kw::ttl) {
                let span = input.parse::<kw::ttl>()?.span;
                let value = parse_seconds(input, "ttl")?;
                set(&mut args.ttl, "ttl", span, value)?;
            } else if look.peek(kw::null_ttl) {
                let span = input.parse::<kw::null_ttl>()?.span;
                let value = parse_seconds(input, "null_ttl")?;
                set(&mut args.null_ttl, "null_ttl", span, value)?;
            } else if look.peek(kw::jitter) {
                let span = input.parse::<kw::jitter>()?.span;
                let value = parse_seconds(input, "jitter")?;
                set(&mut args.jitter, "jitter", span, value)?;
            } else if look.peek(kw::skip) {
                let span = input.parse::<kw::skip>()?.span;
                if !input.peek(token::Paren) {
                    return Err(input.error("expected `(` after `skip`, like `skip(state, req)`"));
                }
                let content;
                parenthesized!(content in input);
                let names = Punctuated::parse_terminated_with(&content, Ident::parse_any)?;
                set(&mut args.skip, "skip", span, Skip::Args(names))?;
            } else if look.peek(kw::skip_all) {
                let span = input.parse::<kw::skip_all>()?.span;
                if input.peek(Token![=]) || input.peek(token::Paren) {
                    return Err(input.error("`skip_all` takes no value"));
                }
                set(&mut args.skip, "skip_all", span, Skip::All)?;
            } else if look.peek(kw::key) {
                let span = input.parse::<kw::key>()?.span;
                let value = parse_value(input, "key", "key = \"{id}:{lang}\"")?;
                set(&mut args.key, "key", span, value)?;
            } else if look.peek(kw::cache) {
                let span = input.parse::<kw::cache>()?.span;
                expect_eq(input, "cache", "cache = state.cache")?;
                let value = input.parse::<Expr>()?;
                set(&mut args.cache, "cache", span, value)?;
            } else if look.peek(kw::version) {
                let span = input.parse::<kw::version>()?.span;
                let value = parse_value(input, "version", "version = 2")?;
                set(&mut args.version, "version", span, value)?;
            } else if look.peek(kw::lock) {
                let span = input.parse::<kw::lock>()?.span;
                let value = if input.peek(Token![=]) && input.peek2(LitBool) {
                    input.parse::<Token![=]>()?;
                    Lock::Flag(input.parse()?)
                } else {
                    Lock::Ttl(parse_seconds(input, "lock")?)
                };
                set(&mut args.lock, "lock", span, value)?;
            } else if look.peek(kw::shape) {
                let span = input.parse::<kw::shape>()?.span;
                expect_eq(input, "shape", "shape = cached_runtime::shape::Plain")?;
                let value = input.parse::<Path>()?;
                set(&mut args.shape, "shape", span, value)?;
            } else if look.peek(kw::near) {
                let span = input.parse::<kw::near>()?.span;
                let value = parse_value(input, "near", "near = false")?;
                set(&mut args.near, "near", span, value)?;
            } else if look.peek(kw::tags) {
                let span = input.parse::<kw::tags>()?.span;
                expect_eq(input, "tags", "tags = [\"category:{category}\"]")?;
                if !input.peek(token::Bracket) {
                    return Err(input.error(
                        "expected a list of tag templates, like `tags = [\"category:{category}\"]`",
                    ));
                }
                let content;
                bracketed!(content in input);
                let tags = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
                set(&mut args.tags, "tags", span, tags.into_iter().collect())?;
            } else if input.peek(kw::local) {
                return Err(renamed_local(input));
            } else if stale::peek(input) {
                stale::parse(input, &mut args.stale)?;
            } else if look.peek(kw::companions) {
                let span = input.parse::<kw::companions>()?.span;
                let value = parse_value(input, "companions", "companions = false")?;
                set(&mut args.companions, "companions", span, value)?;
            } else if look.peek(kw::vary) {
                let span = input.parse::<kw::vary>()?.span;
                if !input.peek(token::Paren) {
                    return Err(input.error(
                        "expected `(` after `vary`, like `vary(req = [\"authorization\"])`",
                    ));
                }
                let content;
                parenthesized!(content in input);
                let sources = Punctuated::<Vary, Token![,]>::parse_terminated(&content)?;
                set(&mut args.vary, "vary", span, sources.into_iter().collect())?;
            } else if look.peek(kw::revalidate) {
                let span = input.parse::<kw::revalidate>()?.span;
                let value = if input.peek(Token![=]) {
                    Some(parse_value(
                        input,
                        "revalidate",
                        "revalidate = \"private, max-age\"",
                    )?)
                } else {
                    None
                };
                set(&mut args.revalidate, "revalidate", span, value)?;
            } else if look.peek(Token![crate]) {
                let span = input.parse::<Token![crate]>()?.span;
                expect_eq(input, "crate", "crate = \"my_facade::cache\"")?;
                let value = if input.peek(LitStr) {
                    let lit = input.parse::<LitStr>()?;
                    lit.parse::<Path>().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            "`crate` takes a path, like `crate = \"my_facade::cache\"`",
                        )
                    })?
                } else {
                    input.call(Path::parse_mod_style)?
                };
                set(&mut args.krate, "crate", span, value)?;
            } else {
                return Err(unknown_option(input));
            }
            if input.is_empty() {
                break;
            }
            if !input.peek(Token![,]) {
                return Err(input.error("expected `,` between options"));
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// Stores an option, or reports it given twice on its second name.
fn set<T>(slot: &mut Option<(Span, T)>, name: &str, span: Span, value: T) -> syn::Result<()> {
    if slot.is_some() {
        let message = if matches!(name, "skip" | "skip_all") {
            "`skip` and `skip_all` may be given once, and not together".to_owned()
        } else {
            format!("`{name}` is given twice; each option may be given once")
        };
        return Err(syn::Error::new(span, message));
    }
    *slot = Some((span, value));
    Ok(())
}

fn expect_eq(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Ok(())
    } else {
        Err(input.error(format!("expected `=` after `{name}`, like `{example}`")))
    }
}

/// `= literal`, with an error that shows the expected form.
fn parse_value<T: Parse>(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<T> {
    expect_eq(input, name, example)?;
    let what = if example.ends_with('"') {
        "a string literal"
    } else if example.ends_with("false") {
        "`true` or `false`"
    } else {
        "an integer literal"
    };
    input
        .parse::<T>()
        .map_err(|e| syn::Error::new(e.span(), format!("`{name}` takes {what}, like `{example}`")))
}

fn parse_seconds(input: ParseStream<'_>, name: &str) -> syn::Result<Seconds> {
    expect_eq(input, name, &format!("{name} = 600"))?;
    let expr = input.parse::<Expr>()?;
    let literal = match &expr {
        Expr::Lit(ExprLit { lit, .. }) => !matches!(lit, Lit::Verbatim(_)),
        Expr::Unary(ExprUnary { expr, .. }) => matches!(&**expr, Expr::Lit(_)),
        _ => false,
    };
    Ok(if literal {
        Seconds::Literal(expr)
    } else {
        Seconds::Duration(expr)
    })
}

/// The error for a token that starts no known option: names it, suggests the nearest one and
/// lists them all.
fn unknown_option(input: ParseStream<'_>) -> syn::Error {
    let valid = OPTIONS
        .iter()
        .chain(&stale::NAMES)
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let fork = input.fork();
    match fork.call(Ident::parse_any) {
        Ok(ident) => {
            let name = ident.to_string();
            let hint = OPTIONS
                .iter()
                .chain(&stale::NAMES)
                .filter(|o| edit_distance(o, &name) <= 2)
                .min_by_key(|o| edit_distance(o, &name))
                .map(|o| format!("did you mean `{o}`? "))
                .unwrap_or_default();
            syn::Error::new(
                ident.span(),
                format!("unknown option `{name}`; {hint}valid options: {valid}"),
            )
        }
        Err(_) => input.error(format!("expected an option; valid options: {valid}")),
    }
}

/// The error for `local`, the option's name before `near`, on the `local` token: the new
/// spelling, with the value given when it is a `bool`.
fn renamed_local(input: ParseStream<'_>) -> syn::Error {
    let fork = input.fork();
    let span = fork
        .parse::<kw::local>()
        .map_or_else(|_| input.span(), |k| k.span);
    let on = fork
        .parse::<Token![=]>()
        .and_then(|_| fork.parse::<LitBool>())
        .is_ok_and(|b| b.value);
    syn::Error::new(span, format!("`local` is now `near`: write `near = {on}`"))
}

/// Levenshtein distance, for suggesting the option a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn parse(tokens: TokenStream) -> syn::Result<Args> {
        syn::parse2(tokens)
    }

    fn error(tokens: TokenStream) -> String {
        match parse(tokens) {
            Ok(_) => panic!("expected a parse error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_option() {
        let args = parse(quote!(
            prefix = "item",
            ttl = 600,
            null_ttl = 30,
            jitter = Duration::from_secs(5),
            skip(a, b),
            key = "{id}",
            cache = state.cache,
            version = 2,
        ))
        .expect("valid options parse");
        assert_eq!(args.prefix.expect("prefix").1.value(), "item");
        assert!(matches!(args.ttl, Some((_, Seconds::Literal(_)))));
        assert!(matches!(args.jitter, Some((_, Seconds::Duration(_)))));
        assert!(matches!(args.skip, Some((_, Skip::Args(names))) if names.len() == 2));
        assert_eq!(args.key.expect("key").1.value(), "{id}");
        assert!(args.cache.is_some());
        assert_eq!(args.version.expect("version").1.base10_digits(), "2");
    }

    #[test]
    fn an_unknown_option_suggests_and_lists_the_valid_ones() {
        let e = error(quote!(prefix = "x", tll = 600));
        assert!(e.starts_with("unknown option `tll`; did you mean `ttl`? valid options: `prefix`"));
        assert!(error(quote!(memo = true)).contains("`cache`, `version`"));
        assert!(!error(quote!(whatever = 1)).contains("did you mean"));
    }

    #[test]
    fn a_repeated_option_is_an_error() {
        assert_eq!(
            error(quote!(ttl = 1, ttl = 2)),
            "`ttl` is given twice; each option may be given once"
        );
        assert!(error(quote!(skip(a), skip_all)).contains("not together"));
    }

    #[test]
    fn mistyped_values_say_the_expected_form() {
        assert_eq!(
            error(quote!(ttl: 600)),
            "expected `=` after `ttl`, like `ttl = 600`"
        );
        assert_eq!(
            error(quote!(prefix = item)),
            "`prefix` takes a string literal, like `prefix = \"item\"`"
        );
        assert!(error(quote!(skip = a)).contains("expected `(` after `skip`"));
        assert!(error(quote!(skip_all = true)).contains("takes no value"));
        assert!(error(quote!(ttl = 1 prefix = "a")).contains("expected `,`"));
    }

    #[test]
    fn number_like_durations_are_literals_and_the_rest_expressions() {
        for tokens in [quote!(ttl = -1), quote!(ttl = 1.5), quote!(ttl = "600")] {
            let args = parse(tokens).expect("parses; validation rejects it");
            assert!(matches!(args.ttl, Some((_, Seconds::Literal(_)))));
        }
        let args = parse(quote!(ttl = TTL)).expect("parses");
        assert!(matches!(args.ttl, Some((_, Seconds::Duration(_)))));
    }

    #[test]
    fn near_is_an_option_and_local_says_it_was_renamed() {
        let args = parse(quote!(prefix = "x", ttl = 1, near = false)).expect("`near` parses");
        assert!(args.near.is_some_and(|(_, flag)| !flag.value));
        assert_eq!(
            error(quote!(prefix = "x", local = false)),
            "`local` is now `near`: write `near = false`"
        );
        assert_eq!(
            error(quote!(local = true)),
            "`local` is now `near`: write `near = true`"
        );
        assert_eq!(
            error(quote!(local = "no")),
            "`local` is now `near`: write `near = false`"
        );
        assert!(error(quote!(nera = false)).contains("did you mean `near`?"));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("ttl", "ttl"), 0);
        assert_eq!(edit_distance("ttl", "tll"), 1);
        assert_eq!(edit_distance("prefix", "prefx"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
