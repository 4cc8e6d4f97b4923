//! Validation: every rule about the options and the function, checked in one place, with each
//! error on the token it is about. What passes becomes a [`Plan`] that expansion follows
//! without further checks.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::{
    Expr, ExprLit, FnArg, GenericArgument, GenericParam, Ident, Lit, LitStr, Pat, PatIdent, Path,
    PathArguments, Receiver, ReturnType, Type, TypePath, ext::IdentExt,
};

use crate::args::{Args, Func, Lock, Seconds, Skip, Vary};

/// The lock TTL of `lock = true`, in seconds: longer than most fills, short enough that a
/// crashed holder is soon forgotten.
const DEFAULT_LOCK_SECS: u64 = 10;

/// What the expansion emits: validated options, the key's parts and the return type.
pub(crate) struct Plan {
    /// The runtime crate's path: `::cached_runtime`, or the `crate = …` option.
    pub(crate) krate: TokenStream,
    pub(crate) prefix: LitStr,
    pub(crate) ttl: Secs,
    pub(crate) null_ttl: Option<Secs>,
    pub(crate) jitter: Option<Secs>,
    pub(crate) version: u32,
    /// The cross-process fill lock's TTL, when `lock` is on.
    pub(crate) lock: Option<Secs>,
    pub(crate) cache: Option<Expr>,
    /// The key template, checked by the runtime's rule at compile time.
    pub(crate) template: Option<LitStr>,
    pub(crate) key: Vec<KeyPart>,
    /// Expressions naming the types that tell a generic function's instantiations apart.
    pub(crate) types: Vec<TokenStream>,
    /// `shape = …`, when given.
    pub(crate) shape: Option<Path>,
    /// The return type as written.
    pub(crate) ret: Type,
    /// The companion functions' inputs, unless `companions = false`.
    pub(crate) companions: Option<Companions>,
    /// `revalidate`: the `Cache-Control` policy given, if any.
    pub(crate) revalidate: Option<Option<LitStr>>,
    /// `local = false`: the near cache never answers this function.
    pub(crate) local: bool,
    /// `vary(...)`: each argument headers are read from, with the header names.
    pub(crate) vary: Vec<(Ident, Vec<LitStr>)>,
    /// Arguments (or bound names) left out of the key: the expansion warns for those that
    /// carry request headers.
    pub(crate) unkeyed: Vec<Ident>,
    /// Names bound by patterns whose type was read off the pattern (`Path(id): Path<u64>`
    /// gives `id: u64`): the getter asserts each, so a companion never takes the wrong type.
    pub(crate) binding_types: Vec<(Ident, Type)>,
}

/// What `{name}_key` and `{name}_invalidate` take besides the cache.
pub(crate) struct Companions {
    /// `&self` when the key names `self` fields.
    pub(crate) receiver: bool,
    /// The arguments `vary` reads headers from, with their types: `{name}_key` takes them,
    /// and `{name}_invalidate` deletes the entries of every header value.
    pub(crate) vary: Vec<(Ident, Type)>,
    /// Each argument (or name bound by an argument's pattern) the key is made of, once, in
    /// the order it first appears, with its type when the signature shows it.
    pub(crate) params: Vec<(Ident, Option<Type>)>,
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
    /// An argument, joined to the previous one by `:`, keyed on what it holds.
    Arg(Ident),
    /// A template placeholder: an argument (keyed on what it holds) or a field path of one
    /// (`q.page`, `self.tenant`), spanned on the template.
    Value {
        root: TokenStream,
        fields: TokenStream,
        span: Span,
    },
    /// A template's literal text.
    Literal(String),
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
    let prefix = match args.prefix {
        Some((_, lit)) => Some(lit),
        None => {
            errors.at(
                Span::call_site(),
                "missing `prefix`: add the key prefix of this function's entries, like `prefix = \"item\"`",
            );
            None
        }
    };
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
    let params = params(func, &mut errors);
    let template = args.key.as_ref().map(|(_, lit)| lit.clone());
    let vary = vary_sources(args.vary, args.skip.as_ref(), &params, &mut errors);
    let vary_args: Vec<String> = vary.iter().map(|(a, _)| a.unraw().to_string()).collect();
    let keyed = key_parts(args.skip, args.key, func, &params, &vary_args, &mut errors);
    for (arg, _) in &vary {
        if keyed.roots.contains(arg) {
            errors.at(
                arg.span(),
                format!("`{arg}` is named in `vary` and in the key template: `vary` keys on its headers, the template cannot key on it"),
            );
        }
    }
    let unkeyed = params
        .iter()
        .flat_map(|p| &p.names)
        .map(|n| &n.ident)
        .filter(|n| !keyed.roots.contains(n) && !vary_args.contains(&n.unraw().to_string()))
        .cloned()
        .collect();
    let ret = return_type(func, &mut errors);
    let types = ret
        .as_ref()
        .map(|ret| discriminators(func, ret, &params, &keyed, &mut errors))
        .unwrap_or_default();
    let companions = match args.companions {
        Some((_, flag)) if !flag.value => None,
        _ => Some(Companions {
            receiver: keyed.self_in_key,
            vary: vary
                .iter()
                .filter(|(_, headers)| !headers.is_empty())
                .filter_map(|(arg, _)| {
                    let name = find(&params, &arg.unraw().to_string())?;
                    Some((name.ident.clone(), name.ty.clone()?))
                })
                .collect(),
            params: keyed
                .roots
                .iter()
                .filter_map(|name| find(&params, &name.unraw().to_string()))
                .map(|n| (n.ident.clone(), n.ty.clone()))
                .collect(),
        }),
    };
    let binding_types = keyed
        .roots
        .iter()
        .filter_map(|name| find(&params, &name.unraw().to_string()))
        .filter(|n| n.bound)
        .filter_map(|n| Some((n.ident.clone(), n.ty.clone()?)))
        .collect();
    let krate = match args.krate {
        Some((_, path)) => path.into_token_stream(),
        None => quote!(::cached_runtime),
    };
    match (errors.0, prefix, ttl, ret) {
        (None, Some(prefix), Some(ttl), Some(ret)) => Ok(Plan {
            krate,
            prefix,
            ttl,
            null_ttl,
            jitter,
            version,
            lock,
            cache: args.cache.map(|(_, e)| e),
            template,
            key: keyed.parts,
            types,
            shape: args.shape.map(|(_, p)| p),
            ret,
            companions,
            binding_types,
            vary,
            unkeyed,
            revalidate: args.revalidate.map(|(_, policy)| policy),
            local: args.local.is_none_or(|(_, flag)| flag.value),
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

/// A typed parameter of the function (the receiver is handled apart).
struct Param<'a> {
    /// The binding when the pattern is a plain identifier.
    name: Option<&'a Ident>,
    pat: &'a Pat,
    ty: &'a Type,
    /// What the key can be made of: the plain identifier, or every name the pattern binds,
    /// in order (`Path((a, b)): Path<(u64, String)>` binds `a` and `b`).
    names: Vec<Name>,
}

/// A name an argument makes visible to the body.
#[derive(Clone)]
struct Name {
    ident: Ident,
    /// Its type, when the signature shows it.
    ty: Option<Type>,
    /// Bound by a pattern, rather than the argument itself.
    bound: bool,
}

fn params<'a>(func: &'a Func, errors: &mut Errors) -> Vec<Param<'a>> {
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
                let names = match name {
                    Some(ident) => vec![Name {
                        ident: ident.clone(),
                        ty: Some((*typed.ty).clone()),
                        bound: false,
                    }],
                    None => {
                        let mut names = Vec::new();
                        bindings(&typed.pat, Some(&typed.ty), &mut names, errors);
                        names
                    }
                };
                Some(Param {
                    name,
                    pat: &typed.pat,
                    ty: &typed.ty,
                    names,
                })
            }
        })
        .collect()
}

/// The names `pat` binds, in order. A name's type is known where the pattern mirrors the type:
/// a one-field tuple struct over a type with one type argument (`Path(id): Path<u64>`), a tuple
/// over a tuple type, a reference over a reference.
fn bindings(pat: &Pat, ty: Option<&Type>, out: &mut Vec<Name>, errors: &mut Errors) {
    let ty = ty.map(strip_parens);
    match pat {
        Pat::Ident(p) => {
            out.push(Name {
                ident: p.ident.clone(),
                ty: ty.cloned(),
                bound: true,
            });
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, ty, out, errors);
            }
        }
        Pat::TupleStruct(p) => {
            let inner = match (p.elems.len(), ty.and_then(last_segment)) {
                (1, Some((_, args))) if args.len() == 1 => Some(args[0]),
                _ => None,
            };
            for elem in &p.elems {
                bindings(elem, inner, out, errors);
            }
        }
        Pat::Tuple(p) => {
            let types = match ty {
                Some(Type::Tuple(t))
                    if t.elems.len() == p.elems.len()
                        && !p.elems.iter().any(|e| matches!(e, Pat::Rest(_))) =>
                {
                    t.elems.iter().map(Some).collect()
                }
                _ => vec![None; p.elems.len()],
            };
            for (elem, ty) in p.elems.iter().zip(types) {
                bindings(elem, ty, out, errors);
            }
        }
        Pat::Reference(p) => {
            let inner = match ty {
                Some(Type::Reference(r)) => Some(&*r.elem),
                _ => None,
            };
            bindings(&p.pat, inner, out, errors);
        }
        Pat::Paren(p) => bindings(&p.pat, ty, out, errors),
        Pat::Struct(p) => {
            for field in &p.fields {
                bindings(&field.pat, None, out, errors);
            }
        }
        Pat::Slice(p) => {
            for elem in &p.elems {
                bindings(elem, None, out, errors);
            }
        }
        // Every alternative binds the same names.
        Pat::Or(p) => {
            if let Some(first) = p.cases.first() {
                bindings(first, None, out, errors);
            }
        }
        Pat::Type(p) => bindings(&p.pat, Some(&p.ty), out, errors),
        Pat::Wild(_) | Pat::Rest(_) | Pat::Lit(_) | Pat::Range(_) | Pat::Path(_) => {}
        _ => errors.spanned(
            pat,
            "#[redis_cache] cannot see the names this argument pattern binds: bind the argument to a name",
        ),
    }
}

fn strip_parens(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip_parens(&p.elem),
        Type::Group(g) => strip_parens(&g.elem),
        _ => ty,
    }
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

fn arg_names(params: &[Param<'_>]) -> String {
    let names: Vec<String> = params
        .iter()
        .flat_map(|p| &p.names)
        .map(|n| format!("`{}`", n.ident))
        .collect();
    if names.is_empty() {
        "the function has no named arguments".to_owned()
    } else {
        format!("arguments: {}", names.join(", "))
    }
}

/// The argument, or name bound by an argument's pattern, called `name`.
fn find<'p>(params: &'p [Param<'_>], name: &str) -> Option<&'p Name> {
    params
        .iter()
        .flat_map(|p| &p.names)
        .find(|n| n.ident.unraw() == name)
}

/// The key's parts, and what they are made of.
struct Keyed {
    parts: Vec<KeyPart>,
    /// Arguments in the key, once each, in order of first appearance.
    roots: Vec<Ident>,
    /// Whether a template names `self` fields.
    self_in_key: bool,
}

fn key_parts(
    skip: Option<(Span, Skip)>,
    template: Option<(Span, LitStr)>,
    func: &Func,
    params: &[Param<'_>],
    vary_args: &[String],
    errors: &mut Errors,
) -> Keyed {
    let receiver = func.sig.receiver();
    let mut keyed = Keyed {
        parts: Vec::new(),
        roots: Vec::new(),
        self_in_key: false,
    };
    let mut skipped: Vec<String> = Vec::new();
    let mut skip_self: Option<Span> = None;
    let mut skip_all = false;
    match &skip {
        None => {}
        Some((_, Skip::All)) => skip_all = true,
        Some((span, Skip::Args(names))) => {
            if names.is_empty() {
                errors.at(
                    *span,
                    "`skip()` names no argument: list the arguments to leave out, like `skip(state)`",
                );
            }
            let mut seen: Vec<&Ident> = Vec::new();
            for name in names {
                if name == "self" {
                    if receiver.is_none() {
                        errors.at(name.span(), "`skip(self)` on a function without `self`");
                    }
                    skip_self = Some(name.span());
                } else if template.is_some() {
                    errors.at(
                        name.span(),
                        "`skip` has no use with `key`: arguments the template does not name are already left out of the key (only `skip(self)` is allowed with it)",
                    );
                } else if find(params, &name.unraw().to_string()).is_none() {
                    errors.at(
                        name.span(),
                        format!("`skip` names no argument `{name}`; {}", arg_names(params)),
                    );
                }
                if seen.iter().any(|s| s.unraw() == name.unraw()) {
                    errors.at(name.span(), format!("`{name}` is skipped twice"));
                }
                seen.push(name);
                skipped.push(name.unraw().to_string());
            }
        }
    }
    if let Some((_, lit)) = &template {
        template_parts(lit, func, params, &mut keyed, errors);
    } else if !skip_all {
        for name in params.iter().flat_map(|p| &p.names) {
            let ident = &name.ident;
            let unraw = ident.unraw().to_string();
            if skipped.contains(&unraw) || vary_args.contains(&unraw) {
                continue;
            }
            keyed.parts.push(KeyPart::Arg(ident.clone()));
            keyed.roots.push(ident.clone());
        }
    }
    if let Some(receiver) = receiver {
        check_receiver(receiver, skip_self, skip_all, keyed.self_in_key, errors);
    }
    keyed
}

/// The `vary(...)` sources: arguments (or bound names) of the function, not skipped, each
/// named once; the header names are checked at compile time by the runtime's rule.
fn vary_sources(
    vary: Option<(Span, Vec<Vary>)>,
    skip: Option<&(Span, Skip)>,
    params: &[Param<'_>],
    errors: &mut Errors,
) -> Vec<(Ident, Vec<LitStr>)> {
    let Some((span, sources)) = vary else {
        return Vec::new();
    };
    if sources.is_empty() {
        errors.at(
            span,
            "`vary()` names no argument: name the request and its headers, like `vary(req = [\"authorization\"])`",
        );
    }
    let mut out: Vec<(Ident, Vec<LitStr>)> = Vec::new();
    for Vary { arg, headers } in sources {
        let name = arg.unraw().to_string();
        if find(params, &name).is_none() {
            errors.at(
                arg.span(),
                format!("`vary` names no argument `{arg}`; {}", arg_names(params)),
            );
            continue;
        }
        if out.iter().any(|(a, _)| a.unraw() == name) {
            errors.at(arg.span(), format!("`{arg}` is named twice in `vary`"));
            continue;
        }
        let skipped = match skip {
            Some((_, Skip::Args(names))) => names.iter().any(|n| n.unraw() == name),
            _ => false,
        };
        if skipped {
            errors.at(
                arg.span(),
                format!("`{arg}` is both skipped and named in `vary`: `vary` already leaves it out of the key but for the headers it names; remove it from `skip`"),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        for header in &headers {
            if seen.contains(&header.value()) {
                errors.at(
                    header.span(),
                    format!("header {:?} is named twice in `vary`", header.value()),
                );
            }
            seen.push(header.value());
        }
        out.push((arg, headers));
    }
    out
}

/// The receiver rule: a method says what `self` contributes to the key.
fn check_receiver(
    receiver: &Receiver,
    skip_self: Option<Span>,
    skip_all: bool,
    self_in_key: bool,
    errors: &mut Errors,
) {
    if has_mut_ref(&receiver.ty) {
        errors.spanned(
            receiver,
            "#[redis_cache] cannot cache a `&mut self` method: a hit skips the body, and with it the mutation; take `&self`, or leave the method uncached",
        );
        return;
    }
    match (skip_self, self_in_key) {
        (Some(span), true) => errors.at(
            span,
            "`skip(self)` contradicts the key template, which names fields of `self`: remove one",
        ),
        (None, false) if !skip_all => errors.spanned(
            receiver,
            "`self` is not part of the cache key, so every instance would read the others' entries: add `skip(self)` to share entries across instances, or name the fields that tell instances apart in a key template, like `key = \"{self.tenant}:{id}\"`",
        ),
        _ => {}
    }
}

/// Whether a type holds a `&mut` (`&mut Self`, `Pin<&mut Self>`).
fn has_mut_ref(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => r.mutability.is_some() || has_mut_ref(&r.elem),
        Type::Paren(p) => has_mut_ref(&p.elem),
        Type::Group(g) => has_mut_ref(&g.elem),
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().any(|a| match a {
                GenericArgument::Type(t) => has_mut_ref(t),
                _ => false,
            }),
            _ => false,
        }),
        _ => false,
    }
}

fn template_parts(
    lit: &LitStr,
    func: &Func,
    params: &[Param<'_>],
    keyed: &mut Keyed,
    errors: &mut Errors,
) {
    let template = lit.value();
    let span = lit.span();
    // The character and gap rules are the runtime's `template_error`, evaluated at compile
    // time by the expansion; here only the placeholders are read.
    let mut rest = template.as_str();
    let mut text = String::new();
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let Some(end) = rest.find('}') else {
                    errors.at(
                        span,
                        format!("unclosed `{{` in key template {template:?}: close the placeholder with `}}`"),
                    );
                    return;
                };
                let placeholder = &rest[1..end];
                if placeholder.contains('{') {
                    errors.at(
                        span,
                        format!("unclosed `{{` in key template {template:?}: close the placeholder with `}}`"),
                    );
                    return;
                }
                if !text.is_empty() {
                    keyed
                        .parts
                        .push(KeyPart::Literal(std::mem::take(&mut text)));
                }
                if let Some(part) =
                    placeholder_value(placeholder, span, func, params, keyed, errors)
                {
                    keyed.parts.push(part);
                }
                rest = &rest[end + 1..];
            }
            '}' => {
                errors.at(span, format!("unmatched `}}` in key template {template:?}"));
                return;
            }
            c => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        keyed.parts.push(KeyPart::Literal(text));
    }
}

/// The value a `{name}`, `{name.field.0}` or `{self.field}` placeholder stands for.
fn placeholder_value(
    placeholder: &str,
    span: Span,
    func: &Func,
    params: &[Param<'_>],
    keyed: &mut Keyed,
    errors: &mut Errors,
) -> Option<KeyPart> {
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
    let mut fields = TokenStream::new();
    for segment in segments {
        match field(segment, span) {
            Some(member) => fields.extend(quote_spanned!(span=> . #member)),
            None => {
                errors.at(
                    span,
                    format!("`{{{placeholder}}}` in key template: `{segment}` is not a field name"),
                );
                return None;
            }
        }
    }
    if root == "self" {
        let Some(receiver) = func.sig.receiver() else {
            errors.at(
                span,
                format!("`{{{placeholder}}}` in key template: this function has no `self`"),
            );
            return None;
        };
        if fields.is_empty() {
            // Reported here; the receiver rule would only repeat it.
            keyed.self_in_key = true;
            errors.at(
                span,
                "`{self}` in key template: name the fields of `self` that tell instances apart, like `{self.tenant}`",
            );
            return None;
        }
        keyed.self_in_key = true;
        let self_token = receiver.self_token;
        return Some(KeyPart::Value {
            root: quote!(#self_token),
            fields,
            span,
        });
    }
    let Some(found) = find(params, root) else {
        errors.at(
            span,
            format!(
                "key template names no argument `{root}`; {}",
                arg_names(params)
            ),
        );
        return None;
    };
    let name = &found.ident;
    let mut ident = name.clone();
    ident.set_span(name.span().located_at(span));
    if !keyed.roots.iter().any(|r| r == name) {
        keyed.roots.push(name.clone());
    }
    Some(KeyPart::Value {
        root: ident.into_token_stream(),
        fields,
        span,
    })
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

/// The return type, or errors for returns that cannot be cached.
fn return_type(func: &Func, errors: &mut Errors) -> Option<Type> {
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
    Some(ty.clone())
}

/// The generic rule: every type parameter (and `Self`) that reaches the return type or an
/// argument left out of the key is named in the key, so instantiations never share entries.
fn discriminators(
    func: &Func,
    ret: &Type,
    params: &[Param<'_>],
    keyed: &Keyed,
    errors: &mut Errors,
) -> Vec<TokenStream> {
    let mut reached = Vec::new();
    idents_in(ret.to_token_stream(), &mut reached);
    let mut values = Vec::new();
    for param in params {
        // A pattern that binds nothing hides its value from the body, but not its type.
        let in_key =
            !param.names.is_empty() && param.names.iter().all(|n| keyed.roots.contains(&n.ident));
        if in_key {
            continue;
        }
        idents_in(param.ty.to_token_stream(), &mut reached);
        if find_impl_trait(param.ty).is_some() {
            match param.name {
                // An anonymous type parameter: named by its value's type.
                Some(name) => values.push(quote!(::core::any::type_name_of_val(&#name))),
                None => errors.spanned(
                    param.pat,
                    "an `impl Trait` argument left out of the key must be bound to a name, so the key can tell its types apart",
                ),
            }
        }
    }
    let skip_self = func.sig.receiver().is_some() && !keyed.self_in_key;
    let mut types = Vec::new();
    for generic in &func.sig.generics.params {
        match generic {
            GenericParam::Type(t) if reached.contains(&t.ident.to_string()) => {
                let ident = &t.ident;
                types.push(quote!(::core::any::type_name::<#ident>()));
            }
            GenericParam::Const(c) if reached.contains(&c.ident.to_string()) => {
                let ident = &c.ident;
                types.push(quote!(::core::any::type_name::<[(); #ident]>()));
            }
            _ => {}
        }
    }
    if skip_self || reached.iter().any(|i| i == "Self") {
        types.push(quote!(::core::any::type_name::<Self>()));
    }
    types.extend(values);
    types
}

/// Every identifier in `tokens`.
fn idents_in(tokens: TokenStream, out: &mut Vec<String>) {
    for tree in tokens {
        match tree {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => idents_in(g.stream(), out),
            _ => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;
    use syn::parse::Parser;

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

    fn bound(pat: TokenStream, ty: TokenStream) -> Vec<(String, Option<String>)> {
        let pat = Pat::parse_single.parse2(pat).expect("a pattern");
        let ty: Type = syn::parse2(ty).expect("a type");
        let mut names = Vec::new();
        let mut errors = Errors::default();
        bindings(&pat, Some(&ty), &mut names, &mut errors);
        assert!(errors.0.is_none());
        names
            .into_iter()
            .map(|n| {
                let ty = n.ty.map(|t| t.to_token_stream().to_string());
                (n.ident.to_string(), ty)
            })
            .collect()
    }

    #[test]
    fn patterns_bind_their_names_in_order_with_the_types_they_mirror() {
        let some = |n: &str, t: &str| (n.to_owned(), Some(t.to_owned()));
        let none = |n: &str| (n.to_owned(), None);
        assert_eq!(
            bound(quote!(Path(id)), quote!(Path<u64>)),
            [some("id", "u64")]
        );
        assert_eq!(
            bound(
                quote!(Path((a, b))),
                quote!(axum::extract::Path<(u64, String)>)
            ),
            [some("a", "u64"), some("b", "String")]
        );
        assert_eq!(
            bound(quote!(&(a, ref mut b)), quote!(&(u8, Vec<u8>))),
            [some("a", "u8"), some("b", "Vec < u8 >")]
        );
        assert_eq!(
            bound(
                quote!(Query(Page { page, lang: l, .. })),
                quote!(Query<Page>)
            ),
            [none("page"), none("l")]
        );
        assert_eq!(bound(quote!((a, ..)), quote!((u8, u8))), [none("a")]);
        assert_eq!(
            bound(quote!(Pair(a, b)), quote!(Pair<u8>)),
            [none("a"), none("b")]
        );
        assert!(bound(quote!(_), quote!(u8)).is_empty());
    }

    #[test]
    fn finds_impl_trait_anywhere_in_the_return_type() {
        let ty: Type = syn::parse2(quote!(Result<Vec<impl Sized>, E>)).expect("a type");
        assert!(find_impl_trait(&ty).is_some());
        let ty: Type = syn::parse2(quote!(Result<Vec<u8>, E>)).expect("a type");
        assert!(find_impl_trait(&ty).is_none());
    }

    #[test]
    fn mutable_receivers_are_found_behind_wrappers() {
        for (ty, found) in [
            (quote!(&mut Self), true),
            (quote!(Pin<&mut Self>), true),
            (quote!(&Self), false),
            (quote!(Arc<Self>), false),
        ] {
            let ty: Type = syn::parse2(ty).expect("a type");
            assert_eq!(has_mut_ref(&ty), found, "{}", ty.to_token_stream());
        }
    }

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
