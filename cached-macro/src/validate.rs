//! Validation: every rule about the options and the function, checked in one place, with each
//! error on the token it is about. What passes becomes a [`Plan`] that expansion follows
//! without further checks.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote_spanned};
use syn::{
    Expr, ExprLit, FnArg, GenericArgument, Ident, Lit, LitStr, Pat, PatIdent, PathArguments,
    ReturnType, Type, TypePath, ext::IdentExt,
};

use std::ops::RangeInclusive;

use crate::args::{Args, Func, Lock, Seconds, Skip};

/// The lock TTL of `lock = true`, in seconds: longer than most fills, short enough that a
/// crashed holder is soon forgotten.
const DEFAULT_LOCK_SECS: u64 = 10;

/// What the expansion emits: validated options, the key's parts and the return shape.
pub(crate) struct Plan {
    pub(crate) prefix: LitStr,
    pub(crate) ttl: Secs,
    pub(crate) null_ttl: Option<Secs>,
    pub(crate) jitter: Option<Secs>,
    pub(crate) version: u32,
    /// The cross-process fill lock's TTL, when `lock` is on.
    pub(crate) lock: Option<Secs>,
    pub(crate) cache: Option<Expr>,
    pub(crate) key: Vec<KeyPart>,
    pub(crate) shape: ShapeKind,
    /// The return type as written.
    pub(crate) ret: Type,
}

/// A validated duration option.
pub(crate) enum Secs {
    /// Whole seconds from an integer literal, checked at compile time.
    Literal(u64, Span),
    /// A `Duration` expression, checked when the policy is evaluated (in a `static`).
    Duration(Expr),
}

/// One part of the key after `prefix:`.
pub(crate) enum KeyPart {
    /// A borrowed argument, joined to the previous one by `:` (`&id`, `&*path`), and the span
    /// errors about it point at.
    Arg(TokenStream, Span),
    /// A template placeholder's borrowed value (`&id`, `&q.page`).
    Value(TokenStream, Span),
    /// A template's literal text.
    Literal(String),
}

/// The runtime shape a return type maps to, chosen by how the type is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShapeKind {
    Plain,
    Optional,
    Fallible,
    FallibleOptional,
    Json,
    FallibleJson,
    OptionalJson,
    FallibleOptionalJson,
}

impl ShapeKind {
    /// The name of the runtime type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ShapeKind::Plain => "Plain",
            ShapeKind::Optional => "Optional",
            ShapeKind::Fallible => "Fallible",
            ShapeKind::FallibleOptional => "FallibleOptional",
            ShapeKind::Json => "Json",
            ShapeKind::FallibleJson => "FallibleJson",
            ShapeKind::OptionalJson => "OptionalJson",
            ShapeKind::FallibleOptionalJson => "FallibleOptionalJson",
        }
    }

    /// Whether the shape needs the runtime's `actix` feature.
    pub(crate) fn is_actix(self) -> bool {
        matches!(
            self,
            ShapeKind::Json
                | ShapeKind::FallibleJson
                | ShapeKind::OptionalJson
                | ShapeKind::FallibleOptionalJson
        )
    }
}

/// Collects every error, so one compile shows all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }
}

/// Checks the options against the function and plans the expansion.
pub(crate) fn validate(args: Args, func: &Func) -> syn::Result<Plan> {
    let mut errors = Errors::default();
    check_signature(func, &mut errors);
    let prefix = check_prefix(args.prefix, &mut errors);
    let ttl = match args.ttl {
        Some((_, value)) => seconds("ttl", value, 1, &mut errors),
        None => {
            errors.at(
                Span::call_site(),
                "missing `ttl`: add how long entries live, in seconds, like `ttl = 600`",
            );
            None
        }
    };
    let null_ttl = args
        .null_ttl
        .and_then(|(_, v)| seconds("null_ttl", v, 1, &mut errors));
    let jitter = args
        .jitter
        .and_then(|(_, v)| seconds("jitter", v, 0, &mut errors));
    let version = match args.version {
        Some((_, lit)) => lit.base10_parse::<u32>().unwrap_or_else(|e| {
            errors.at(lit.span(), format!("`version` takes a `u32`: {e}"));
            0
        }),
        None => 0,
    };
    let lock = match args.lock {
        None => None,
        Some((_, Lock::Flag(flag))) => flag
            .value
            .then_some(Secs::Literal(DEFAULT_LOCK_SECS, flag.span)),
        Some((_, Lock::Ttl(v))) => seconds("lock", v, 1, &mut errors),
    };
    let params = params(func);
    let key = key_parts(args.skip, args.key, &params, &mut errors);
    let ret = return_type(func, &mut errors);
    match (errors.0, prefix, ttl, ret) {
        (None, Some(prefix), Some(ttl), Some((ret, shape))) => Ok(Plan {
            prefix,
            ttl,
            null_ttl,
            jitter,
            version,
            lock,
            cache: args.cache.map(|(_, e)| e),
            key,
            shape,
            ret,
        }),
        (Some(e), ..) => Err(e),
        // Every `None` above pushed an error.
        _ => Err(syn::Error::new(Span::call_site(), "invalid #[redis_cache]")),
    }
}

fn check_signature(func: &Func, errors: &mut Errors) {
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
        errors.at(
            sig.fn_token.span,
            "#[redis_cache] needs an `async fn`: add `async` before `fn`",
        );
    }
    if let Err(semi) = &func.body {
        errors.at(
            semi.span,
            "#[redis_cache] needs a function body to cache: put it on each implementation of this method, or give the trait method a default body",
        );
    }
}

fn check_prefix(prefix: Option<(Span, LitStr)>, errors: &mut Errors) -> Option<LitStr> {
    let Some((_, lit)) = prefix else {
        errors.at(
            Span::call_site(),
            "missing `prefix`: add the key prefix of this function's entries, like `prefix = \"item\"`",
        );
        return None;
    };
    let value = lit.value();
    if value.is_empty() {
        errors.at(
            lit.span(),
            "`prefix` must not be empty: it keeps this function's keys apart from every other function's",
        );
        return None;
    }
    // The same rule as `cached_runtime::key::validate_prefix`.
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        let why = match bad {
            '*' | '?' | '[' | ']' | '\\' => {
                " (a glob character would make prefix invalidation match other keys)"
            }
            ':' => " (`:` separates the prefix from the arguments)",
            c if c.is_whitespace() => " (whitespace)",
            _ => "",
        };
        errors.at(
            lit.span(),
            format!(
                "`prefix` may only use ASCII letters, digits and `_ - . /`; found {bad:?}{why}"
            ),
        );
        return None;
    }
    Some(lit)
}

/// Validates a duration option; `min` is the least number of seconds allowed.
fn seconds(name: &str, value: Seconds, min: u64, errors: &mut Errors) -> Option<Secs> {
    let expr = match value {
        Seconds::Duration(expr) => return Some(Secs::Duration(expr)),
        Seconds::Literal(expr) => expr,
    };
    let form = format!(
        "`{name}` takes whole seconds as an integer literal, like `{name} = 600`, or a `Duration` expression"
    );
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = &expr
    else {
        if let Expr::Unary(_) = &expr {
            errors.spanned(
                &expr,
                format!("`{name}` must be a positive number of seconds, like `{name} = 600`"),
            );
        } else {
            errors.spanned(&expr, form);
        }
        return None;
    };
    if !int.suffix().is_empty() {
        errors.at(
            int.span(),
            format!("`{name}` is a number of seconds without a suffix, like `{name} = 600`"),
        );
        return None;
    }
    match int.base10_parse::<u64>() {
        Ok(0) if min > 0 => {
            errors.at(
                int.span(),
                format!("`{name}` must be at least 1 second, like `{name} = 600`"),
            );
            None
        }
        Ok(secs) => Some(Secs::Literal(secs, int.span())),
        Err(e) => {
            errors.at(int.span(), format!("`{name}`: {e}"));
            None
        }
    }
}

/// A typed parameter of the function (the receiver is never one: `self` is not in the key).
struct Param<'a> {
    /// The binding when the pattern is a plain identifier.
    name: Option<&'a Ident>,
    pat: &'a Pat,
    arg: &'a FnArg,
    kind: ParamKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    /// Keyed on its own `Serialize`.
    Value,
    /// An Actix extractor keyed on the value it derefs to.
    Extractor,
    /// An Actix type that holds request or application state: never keyed.
    Scoped(&'static str),
}

fn params(func: &Func) -> Vec<Param<'_>> {
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
                Some(Param {
                    name,
                    pat: &typed.pat,
                    arg,
                    kind: param_kind(&typed.ty),
                })
            }
        })
        .collect()
}

/// The last path segment of a type, behind references and parentheses, with its type
/// arguments.
fn last_segment(ty: &Type) -> Option<(&Ident, Vec<&Type>)> {
    match ty {
        Type::Reference(r) => last_segment(&r.elem),
        Type::Paren(p) => last_segment(&p.elem),
        Type::Group(g) => last_segment(&g.elem),
        Type::Path(TypePath { qself: None, path }) => {
            let seg = path.segments.last()?;
            let args = match &seg.arguments {
                PathArguments::AngleBracketed(a) => a
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((&seg.ident, args))
        }
        _ => None,
    }
}

fn param_kind(ty: &Type) -> ParamKind {
    let Some((ident, args)) = last_segment(ty) else {
        return ParamKind::Value;
    };
    match (ident.to_string().as_str(), args.len()) {
        ("Path" | "Query" | "Json" | "Form", 1) => ParamKind::Extractor,
        ("Data", 1) => ParamKind::Scoped("`web::Data` is application state"),
        ("ThinData", 1) => ParamKind::Scoped("`web::ThinData` is application state"),
        ("ReqData", 1) => ParamKind::Scoped("`web::ReqData` is request state"),
        ("HttpRequest", 0) => ParamKind::Scoped("`HttpRequest` is the whole request"),
        ("HttpResponse", _) => ParamKind::Scoped("`HttpResponse` is a response"),
        ("Payload", 0) => ParamKind::Scoped("`web::Payload` is the request body stream"),
        _ => ParamKind::Value,
    }
}

fn arg_names(params: &[Param<'_>]) -> String {
    let names: Vec<String> = params
        .iter()
        .filter_map(|p| p.name)
        .map(|n| format!("`{n}`"))
        .collect();
    if names.is_empty() {
        "the function has no named arguments".to_owned()
    } else {
        format!("arguments: {}", names.join(", "))
    }
}

fn find<'p, 'a>(params: &'p [Param<'a>], name: &str) -> Option<&'p Param<'a>> {
    params
        .iter()
        .find(|p| p.name.is_some_and(|n| n.unraw() == name))
}

/// The borrowed value of a keyed parameter, spanned on it so a missing `Serialize` points at
/// the argument.
fn borrow(param: &Param<'_>, name: &Ident) -> TokenStream {
    let span = name.span();
    match param.kind {
        ParamKind::Extractor => quote_spanned!(span=> &*#name),
        _ => quote_spanned!(span=> &#name),
    }
}

fn key_parts(
    skip: Option<(Span, Skip)>,
    template: Option<(Span, LitStr)>,
    params: &[Param<'_>],
    errors: &mut Errors,
) -> Vec<KeyPart> {
    if let Some((_, lit)) = template {
        if let Some((span, _)) = skip {
            errors.at(
                span,
                "`skip` has no use with `key`: arguments the template does not name are already left out of the key",
            );
        }
        return template_parts(&lit, params, errors);
    }
    let skipped = match skip {
        None => Vec::new(),
        Some((_, Skip::All)) => return Vec::new(),
        Some((span, Skip::Args(names))) => {
            if names.is_empty() {
                errors.at(
                    span,
                    "`skip()` names no argument: list the arguments to leave out, like `skip(state)`",
                );
            }
            let mut seen: Vec<&Ident> = Vec::new();
            for name in &names {
                if name == "self" {
                    errors.at(
                        name.span(),
                        "`self` is never part of the key: remove it from `skip`",
                    );
                } else if find(params, &name.unraw().to_string()).is_none() {
                    errors.at(
                        name.span(),
                        format!("`skip` names no argument `{name}`; {}", arg_names(params)),
                    );
                } else if seen.iter().any(|s| s.unraw() == name.unraw()) {
                    errors.at(name.span(), format!("`{name}` is skipped twice"));
                }
                seen.push(name);
            }
            names.into_iter().map(|n| n.unraw().to_string()).collect()
        }
    };
    let mut parts = Vec::new();
    for param in params {
        let Some(name) = param.name else {
            errors.spanned(
                param.pat,
                "this argument pattern cannot be part of the cache key: bind the argument to a name (and `skip` it if it does not belong in the key), or name the key's arguments with `key = \"...\"`",
            );
            continue;
        };
        if skipped.contains(&name.unraw().to_string()) {
            continue;
        }
        if let ParamKind::Scoped(what) = param.kind {
            errors.spanned(
                param.arg,
                format!(
                    "{what} and cannot be part of the cache key: add `skip({name})` to the attribute"
                ),
            );
            continue;
        }
        parts.push(KeyPart::Arg(borrow(param, name), name.span()));
    }
    parts
}

/// Characters the key encoding reserves; template text may use none of them but `:`.
fn is_reserved(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '%' | ',' | '(' | ')' | '=' | '~' | '!' | '#' | '*' | '?' | '[' | ']' | '\\' | '"'
        )
}

fn template_parts(lit: &LitStr, params: &[Param<'_>], errors: &mut Errors) -> Vec<KeyPart> {
    let template = lit.value();
    let span = lit.span();
    if template.is_empty() {
        errors.at(
            span,
            "empty key template: name the arguments the key is made of, like `key = \"{id}\"`, or use `skip_all`",
        );
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut rest = template.as_str();
    let mut text = String::new();
    let mut last_placeholder: Option<&str> = None;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let Some(end) = rest.find('}') else {
                    errors.at(
                        span,
                        format!("unclosed `{{` in key template {template:?}: close the placeholder with `}}`"),
                    );
                    return parts;
                };
                let placeholder = &rest[1..end];
                if placeholder.contains('{') {
                    errors.at(
                        span,
                        format!("unclosed `{{` in key template {template:?}: close the placeholder with `}}`"),
                    );
                    return parts;
                }
                if !text.is_empty() {
                    parts.push(KeyPart::Literal(std::mem::take(&mut text)));
                } else if let Some(previous) = last_placeholder {
                    errors.at(
                        span,
                        format!(
                            "placeholders `{{{previous}}}` and `{{{placeholder}}}` need text between them, like `{{{previous}}}:{{{placeholder}}}`, or the key is ambiguous"
                        ),
                    );
                }
                if let Some(value) = placeholder_value(placeholder, span, params, errors) {
                    parts.push(KeyPart::Value(value, span));
                }
                last_placeholder = Some(placeholder);
                rest = &rest[end + 1..];
            }
            '}' => {
                errors.at(span, format!("unmatched `}}` in key template {template:?}"));
                return parts;
            }
            c if is_reserved(c) => {
                errors.at(
                    span,
                    format!(
                        "key template text cannot contain {c:?}: the key encoding reserves whitespace and `% , ( ) = ~ ! # * ? [ ] \\ {{ }} \"` (`:` is allowed)"
                    ),
                );
                return parts;
            }
            c => {
                text.push(c);
                last_placeholder = None;
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        parts.push(KeyPart::Literal(text));
    }
    parts
}

/// The borrowed value a `{name}` or `{name.field.0}` placeholder stands for.
fn placeholder_value(
    placeholder: &str,
    span: Span,
    params: &[Param<'_>],
    errors: &mut Errors,
) -> Option<TokenStream> {
    let mut segments = placeholder.split('.');
    let root = segments.next().unwrap_or_default();
    let root = root.strip_prefix("r#").unwrap_or(root);
    if root.is_empty() {
        errors.at(
            span,
            format!("empty placeholder `{{{placeholder}}}` in key template: name an argument, like `{{id}}`"),
        );
        return None;
    }
    if root == "self" {
        errors.at(
            span,
            "`self` is never part of the key: name arguments in the key template",
        );
        return None;
    }
    let Some(param) = find(params, root) else {
        errors.at(
            span,
            format!(
                "key template names no argument `{root}`; {}",
                arg_names(params)
            ),
        );
        return None;
    };
    // `find` only matches named parameters.
    let name = param.name?;
    let located = name.span().located_at(span);
    let mut ident = name.clone();
    ident.set_span(located);
    let mut fields = TokenStream::new();
    for segment in segments {
        match field(segment, located) {
            Some(member) => fields.extend(quote_spanned!(located=> . #member)),
            None => {
                errors.at(
                    span,
                    format!("`{{{placeholder}}}` in key template: `{segment}` is not a field name"),
                );
                return None;
            }
        }
    }
    if fields.is_empty() {
        if let ParamKind::Scoped(what) = param.kind {
            errors.at(
                span,
                format!("{what} and cannot be part of the cache key; name one of its fields, like `{{{root}.field}}`"),
            );
            return None;
        }
        return Some(borrow(param, &ident));
    }
    Some(quote_spanned!(located=> &#ident #fields))
}

/// A field name or tuple index of a placeholder path.
fn field(segment: &str, span: Span) -> Option<TokenStream> {
    if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
        let index: u32 = segment.parse().ok()?;
        return Some(syn::Index { index, span }.into_token_stream());
    }
    let (raw, name) = match segment.strip_prefix("r#") {
        Some(name) => (true, name),
        None => (false, segment),
    };
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name != "_";
    if !valid || matches!(name, "self" | "Self" | "super" | "crate") {
        return None;
    }
    // A keyword field (`type`) can only be named raw (`r#type`).
    let ident = if raw || syn::parse_str::<Ident>(name).is_err() {
        Ident::new_raw(name, span)
    } else {
        Ident::new(name, span)
    };
    Some(ident.into_token_stream())
}

/// The return type and its shape, or errors for returns that cannot be cached.
fn return_type(func: &Func, errors: &mut Errors) -> Option<(Type, ShapeKind)> {
    let ty = match &func.sig.output {
        ReturnType::Default => {
            errors.at(
                func.sig.ident.span(),
                "a #[redis_cache] function must return the value to cache; this one returns `()`",
            );
            return None;
        }
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Type::Tuple(t) = ty
        && t.elems.is_empty()
    {
        errors.spanned(
            ty,
            "a #[redis_cache] function must return the value to cache, not `()`",
        );
        return None;
    }
    if let Some(impl_trait) = find_impl_trait(ty) {
        errors.spanned(
            impl_trait,
            "#[redis_cache] needs a concrete return type to decode cached values into, not `impl Trait`",
        );
        return None;
    }
    Some((ty.clone(), shape(ty)))
}

fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Reference(r) => find_impl_trait(&r.elem),
        Type::Paren(p) => find_impl_trait(&p.elem),
        Type::Group(g) => find_impl_trait(&g.elem),
        Type::Array(a) => find_impl_trait(&a.elem),
        Type::Slice(s) => find_impl_trait(&s.elem),
        Type::Ptr(p) => find_impl_trait(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_impl_trait),
        Type::Path(p) => p.path.segments.iter().find_map(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().find_map(|a| match a {
                GenericArgument::Type(t) => find_impl_trait(t),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

/// The single (or first) type argument of `name<...>` with `arity` type arguments.
fn generic_of<'t>(ty: &'t Type, name: &str, arity: RangeInclusive<usize>) -> Option<&'t Type> {
    match last_segment(ty) {
        Some((ident, args)) if ident == name && arity.contains(&args.len()) => Some(args[0]),
        _ => None,
    }
}

/// Picks the shape by syntax: `Option<_>`, `Result<_, _>` (or a one-argument `Result` alias)
/// and `Json<_>`, nested as the runtime supports.
fn shape(ty: &Type) -> ShapeKind {
    let json = |ty: &Type| generic_of(ty, "Json", 1..=1).is_some();
    // A reference is not an owned value to decode into: leave it to `Plain`, which rejects it.
    if matches!(ty, Type::Reference(_)) {
        return ShapeKind::Plain;
    }
    if let Some(inner) = generic_of(ty, "Option", 1..=1) {
        return if json(inner) {
            ShapeKind::OptionalJson
        } else {
            ShapeKind::Optional
        };
    }
    let result = match last_segment(ty) {
        // `Result`, or an alias named like one (`AppResult<T>`, `io::Result<T>`).
        Some((ident, args))
            if ident.to_string().ends_with("Result") && (1..=2).contains(&args.len()) =>
        {
            Some(args[0])
        }
        _ => None,
    };
    if let Some(ok) = result {
        if let Some(inner) = generic_of(ok, "Option", 1..=1) {
            return if json(inner) {
                ShapeKind::FallibleOptionalJson
            } else {
                ShapeKind::FallibleOptional
            };
        }
        return if json(ok) {
            ShapeKind::FallibleJson
        } else {
            ShapeKind::Fallible
        };
    }
    if json(ty) {
        ShapeKind::Json
    } else {
        ShapeKind::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn shape_of(tokens: TokenStream) -> ShapeKind {
        shape(&syn::parse2(tokens).expect("a type"))
    }

    #[test]
    fn shapes_follow_the_written_return_type() {
        assert_eq!(shape_of(quote!(Item)), ShapeKind::Plain);
        assert_eq!(shape_of(quote!(Vec<Item>)), ShapeKind::Plain);
        assert_eq!(shape_of(quote!(Option<Item>)), ShapeKind::Optional);
        assert_eq!(
            shape_of(quote!(std::option::Option<Item>)),
            ShapeKind::Optional
        );
        assert_eq!(shape_of(quote!(Result<Item, E>)), ShapeKind::Fallible);
        assert_eq!(shape_of(quote!(anyhow::Result<Item>)), ShapeKind::Fallible);
        assert_eq!(shape_of(quote!(AppResult<Item>)), ShapeKind::Fallible);
        assert_eq!(shape_of(quote!(Resulting<Item>)), ShapeKind::Plain);
        assert_eq!(
            shape_of(quote!(Result<Option<Item>, E>)),
            ShapeKind::FallibleOptional
        );
        assert_eq!(shape_of(quote!(web::Json<Item>)), ShapeKind::Json);
        assert_eq!(shape_of(quote!(Json<Item>)), ShapeKind::Json);
        assert_eq!(
            shape_of(quote!(Result<web::Json<Item>, Error>)),
            ShapeKind::FallibleJson
        );
        assert_eq!(
            shape_of(quote!(Option<web::Json<Item>>)),
            ShapeKind::OptionalJson
        );
        assert_eq!(
            shape_of(quote!(actix_web::Result<Option<Json<Item>>>)),
            ShapeKind::FallibleOptionalJson
        );
    }

    #[test]
    fn template_text_rejects_reserved_characters_but_colons() {
        for c in [
            '%', ',', '(', ')', '=', '~', '!', '#', '*', '?', '[', ']', '\\', '"', ' ', '\t',
        ] {
            assert!(is_reserved(c), "{c:?}");
        }
        for c in [':', 'a', '-', '.', '/', '_', 'é'] {
            assert!(!is_reserved(c), "{c:?}");
        }
    }

    #[test]
    fn placeholder_fields_are_identifiers_or_indexes() {
        let span = Span::call_site();
        assert_eq!(field("page", span).expect("ident").to_string(), "page");
        assert_eq!(field("0", span).expect("index").to_string(), "0");
        assert_eq!(field("r#type", span).expect("raw").to_string(), "r#type");
        assert_eq!(field("type", span).expect("keyword").to_string(), "r#type");
        for bad in ["", "_", "1a", "a-b", "a b", "r#self", "self", "é"] {
            assert!(field(bad, span).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn finds_impl_trait_anywhere_in_the_return_type() {
        let ty: Type = syn::parse2(quote!(Result<Vec<impl Sized>, E>)).expect("a type");
        assert!(find_impl_trait(&ty).is_some());
        let ty: Type = syn::parse2(quote!(Result<Vec<u8>, E>)).expect("a type");
        assert!(find_impl_trait(&ty).is_none());
    }
}
