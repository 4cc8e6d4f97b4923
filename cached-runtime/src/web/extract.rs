//! Extractor keys: the value a handler argument is keyed on (a framework's extractor keys on
//! the value it holds, request context cannot be keyed), and which skipped arguments can carry
//! the caller's identity. Each framework's file registers its types with the macros here.

use std::marker::PhantomData;

use serde::Serialize;

/// The value a key argument is keyed on, selected by autoref specialization: a framework's
/// extractor (`web::Path<T>`) keys on the `T` it holds, anything else on itself. The call is
/// `(&&KeyProbe(&arg)).__cached_key()`.
#[derive(Debug)]
pub struct KeyProbe<'a, V: ?Sized>(pub &'a V);

/// A framework extractor: keyed on the value it holds.
pub trait KeyLevel1<'a> {
    /// The value keyed on.
    type Target: ?Sized;
    /// The value keyed on.
    fn __cached_key(&self) -> &'a Self::Target;
}

/// Request context (shared state, the request or its headers): never keyed; the value keyed
/// on is a [`MustSkip`], whose error says to skip the argument.
pub trait KeyLevel2<'a> {
    /// The value keyed on.
    type Target: ?Sized;
    /// The value keyed on.
    fn __cached_key(&self) -> &'a Self::Target;
}

/// Anything else: keyed on itself.
pub trait KeyLevel0<'a> {
    /// The value keyed on.
    type Target: ?Sized;
    /// The value keyed on.
    fn __cached_key(&self) -> &'a Self::Target;
}

impl<'a, V: ?Sized> KeyLevel0<'a> for KeyProbe<'a, V> {
    type Target = V;
    #[inline]
    fn __cached_key(&self) -> &'a V {
        self.0
    }
}

/// What a companion function accepts for a key argument declared as `A`: `A` itself, or the
/// value a framework extractor `A` holds (`u64` for `web::Path<u64>`).
pub trait KeyFor<A: ?Sized>: Serialize {}

impl<A: Serialize + ?Sized> KeyFor<A> for A {}

impl KeyFor<String> for str {}

/// Registers a framework extractor type `$ty` (with parameter `T`) that derefs to the value
/// it is keyed on.
#[allow(unused_macros)]
macro_rules! extractor {
    ($($ty:ident)::+<T>) => {
        impl<'a, T> $crate::web::extract::KeyLevel1<'a> for &$crate::web::extract::KeyProbe<'a, $($ty)::+<T>> {
            type Target = T;
            #[inline]
            fn __cached_key(&self) -> &'a T {
                ::std::ops::Deref::deref(self.0)
            }
        }
        impl<T: ::serde::Serialize> $crate::web::extract::KeyFor<$($ty)::+<T>> for T {}
    };
}
#[allow(unused_imports)]
pub(crate) use extractor;

/// Whether an argument left out of the key can carry the caller's identity (a request or its
/// headers), selected like [`KeyProbe`]: `(&&RiskProbe(&arg)).__cached_risk()` warns then.
#[derive(Debug)]
pub struct RiskProbe<'a, V: ?Sized>(pub &'a V);

/// A request or its headers, left out of the key: a deprecation warning on the argument.
pub trait RiskLevel1 {
    /// Warns.
    // The note is the compiler's warning text, which rustdoc would read as a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[deprecated(
        note = "#[redis_cache]: this argument holds request headers and is left out of the cache key, so a result that depends on the caller (a header, a cookie) would be served to other callers: key on what it depends on with `vary(arg = [\"authorization\"])`, or say it depends on none of them with `vary(arg = [])`"
    )]
    fn __cached_risk(&self) {}
}

/// Anything else: nothing to say.
pub trait RiskLevel0 {
    /// Says nothing.
    #[inline]
    fn __cached_risk(&self) {}
}

impl<V: ?Sized> RiskLevel0 for RiskProbe<'_, V> {}

/// Registers a type that carries request headers.
#[allow(unused_macros)]
macro_rules! risky {
    ($($ty:ident)::+ $(<$($g:ident),*>)?) => {
        impl<'a $($(, $g)*)?> $crate::web::extract::RiskLevel1
            for &$crate::web::extract::RiskProbe<'a, $($ty)::+ $(<$($g),*>)?> {}
    };
}
#[allow(unused_imports)]
pub(crate) use risky;

/// What a request-context argument (`State<S>`, `web::Data<T>`, `HttpRequest`, `HeaderMap`…)
/// is keyed on: nothing that compiles. `W` says why, in the error.
#[derive(Debug)]
pub struct MustSkip<C: ?Sized, W>(PhantomData<(W, fn() -> C)>);

impl<C: ?Sized, W> MustSkip<C, W> {
    #[allow(dead_code)] // used by the framework features' `context!` impls
    pub(crate) const NEW: Self = MustSkip(PhantomData);
}

/// Why a [`MustSkip`] argument cannot be keyed: it is shared state.
#[derive(Debug)]
pub struct SharedState;

/// Why a [`MustSkip`] argument cannot be keyed: it is the request or its headers.
#[derive(Debug)]
pub struct WholeRequest;

/// Implemented by nothing: the error for shared state in the key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is shared state, not part of the cache key: leave it out with `skip(...)`",
    label = "this argument is part of the cache key",
    note = "every argument not skipped is part of the key; state shared by all requests does not tell calls apart"
)]
pub trait SkipSharedState {}

/// Implemented by nothing: the error for a request or its headers in the key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` holds the whole request, which cannot be part of the cache key: leave it out with `skip(...)`",
    label = "this argument is part of the cache key",
    note = "when the result depends on request headers (the caller's identity, the language), key on them with `vary(name = [\"authorization\"])`"
)]
pub trait SkipWholeRequest {}

// Bounded by traits nothing implements: the error is theirs, naming the argument's type.
impl<C: SkipSharedState + ?Sized> Serialize for MustSkip<C, SharedState> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<C: SkipWholeRequest + ?Sized> Serialize for MustSkip<C, WholeRequest> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

/// Registers request-context types `$ty` (with parameters `$g`) that must be skipped.
#[allow(unused_macros)]
macro_rules! context {
    ($why:ident: $($ty:ident)::+ $(<$($g:ident),*>)?) => {
        impl<'a $($(, $g)*)?> $crate::web::extract::KeyLevel2<'a>
            for &&$crate::web::extract::KeyProbe<'a, $($ty)::+ $(<$($g),*>)?>
        {
            type Target = $crate::web::extract::MustSkip<$($ty)::+ $(<$($g),*>)?, $crate::web::extract::$why>;
            #[inline]
            fn __cached_key(&self) -> &'a Self::Target {
                &$crate::web::extract::MustSkip::NEW
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use context;
