//! Validation: every rule about the options and the function, checked in one place, with each
//! error on the token it is about. What passes becomes a [`Plan`] that expansion follows
//! without further checks. One module per concern; [`validate`] runs them in order.

mod companions;
mod errors;
mod generics;
mod key;
mod options;
mod params;
mod receiver;
mod shape;
mod signature;
mod stale;
mod tags;
mod template;
mod ty;
mod vary;

use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr, Type};

use self::errors::Errors;
pub(crate) use self::{
    companions::Companions,
    key::KeyPart,
    options::{Options, Secs},
    stale::StaleOptions,
    tags::Tag,
};
use crate::args::{Args, Func};

/// What the expansion emits: validated options, the key's parts and the return type.
pub(crate) struct Plan {
    pub(crate) options: Options,
    /// The key template, checked by the runtime's rule at compile time.
    pub(crate) template: Option<LitStr>,
    pub(crate) key: Vec<KeyPart>,
    /// `tags = [...]`: each template with its parts, checked like the key template.
    pub(crate) tags: Vec<Tag>,
    /// Expressions naming the types that tell a generic function's instantiations apart.
    pub(crate) types: Vec<TokenStream>,
    /// The return type as written.
    pub(crate) ret: Type,
    /// The companion functions' inputs, unless `companions = false`.
    pub(crate) companions: Option<Companions>,
    /// `vary(...)`: each argument headers are read from, with the header names.
    pub(crate) vary: Vec<(Ident, Vec<LitStr>)>,
    /// Arguments (or bound names) left out of the key: the expansion warns for those that
    /// carry request headers.
    pub(crate) unkeyed: Vec<Ident>,
    /// Names bound by patterns whose type was read off the pattern (`Path(id): Path<u64>`
    /// gives `id: u64`): the getter asserts each, so a companion never takes the wrong type.
    pub(crate) binding_types: Vec<(Ident, Type)>,
}

/// Checks the options against the function and plans the expansion. Every rule runs, so one
/// compile reports every mistake, in this order.
pub(crate) fn validate(args: Args, func: &Func) -> syn::Result<Plan> {
    let mut errors = Errors::default();
    signature::check(func, &mut errors);
    let options = options::check(&args, &mut errors);
    let params = params::of(func, &mut errors);
    let skip = args.skip.as_ref();
    let vary = vary::sources(args.vary, skip, &params, &mut errors);
    let vary_args = vary::names(&vary);
    let template = args.key.as_ref();
    let keyed = key::parts(skip, template, func, &params, &vary_args, &mut errors);
    vary::check_not_in_template(&vary, &keyed, &mut errors);
    let tags = tags::parts(args.tags.as_ref(), func, &params, &keyed, &mut errors);
    let ret = shape::return_type(func, &mut errors);
    let types = ret
        .as_ref()
        .map(|ret| generics::discriminators(func, ret, &params, &keyed, &mut errors))
        .unwrap_or_default();
    errors.finish()?;
    let (Some(options), Some(ret)) = (options, ret) else {
        // Every `None` above pushed an error.
        return Err(syn::Error::new(Span::call_site(), "invalid #[redis_cache]"));
    };
    let companions = options
        .companions
        .then(|| companions::of(&params, &keyed, &vary));
    Ok(Plan {
        template: args.key.map(|(_, lit)| lit),
        unkeyed: key::unkeyed(&params, &keyed, &vary_args),
        binding_types: companions::binding_types(&params, &keyed),
        key: keyed.parts,
        tags,
        options,
        types,
        ret,
        companions,
        vary,
    })
}
