//! The shapes ([`Plain`], [`Optional`], [`Fallible`], [`FallibleOptional`]), their
//! [`Adapter`]s, and shape selection for the macro; published as `cached_runtime::shape`, with
//! each framework's adapter added from its file under `web/`.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

/// What a computed result stores.
#[derive(Debug)]
pub enum Entry<'a, T> {
    /// Store this value with the function's TTL.
    Value(&'a T),
    /// Store the null marker with the null TTL.
    Absent,
    /// Store nothing (an error).
    Skip,
}

/// Maps results of type `R` to entries and back.
pub trait Shape<R> {
    /// The type stored as JSON.
    type Value: Serialize + DeserializeOwned;
    /// What to store for a computed result.
    fn entry(result: &R) -> Entry<'_, Self::Value>;
    /// The result for a stored value, or for the null marker (`None`). Returning `None`
    /// treats the entry as a miss.
    fn from_hit(value: Option<Self::Value>) -> Option<R>;
}

/// Maps a wrapper `W` (what a function returns inside `Option`/`Result`) to the value stored.
pub trait Adapter<W> {
    /// The stored value.
    type Value;
    /// The value inside the wrapper.
    fn value(wrapper: &W) -> &Self::Value;
    /// The wrapper around a stored value.
    fn wrap(value: Self::Value) -> W;
}

/// Stores the value itself.
#[derive(Debug)]
pub struct Identity;

impl<T> Adapter<T> for Identity {
    type Value = T;
    fn value(wrapper: &T) -> &T {
        wrapper
    }
    fn wrap(value: T) -> T {
        value
    }
}

/// `T`: every result is stored; a null marker is a miss.
#[derive(Debug)]
pub struct Plain<A = Identity>(PhantomData<A>);

impl<R, A: Adapter<R>> Shape<R> for Plain<A>
where
    A::Value: Serialize + DeserializeOwned,
{
    type Value = A::Value;
    fn entry(result: &R) -> Entry<'_, A::Value> {
        Entry::Value(A::value(result))
    }
    fn from_hit(value: Option<A::Value>) -> Option<R> {
        value.map(A::wrap)
    }
}

/// `Option<T>`: `None` is stored as the null marker.
#[derive(Debug)]
pub struct Optional<A = Identity>(PhantomData<A>);

impl<W, A: Adapter<W>> Shape<Option<W>> for Optional<A>
where
    A::Value: Serialize + DeserializeOwned,
{
    type Value = A::Value;
    fn entry(result: &Option<W>) -> Entry<'_, A::Value> {
        match result {
            Some(v) => Entry::Value(A::value(v)),
            None => Entry::Absent,
        }
    }
    fn from_hit(value: Option<A::Value>) -> Option<Option<W>> {
        Some(value.map(A::wrap))
    }
}

/// `Result<T, E>`: `Ok` is stored, `Err` never.
#[derive(Debug)]
pub struct Fallible<A = Identity>(PhantomData<A>);

impl<W, E, A: Adapter<W>> Shape<Result<W, E>> for Fallible<A>
where
    A::Value: Serialize + DeserializeOwned,
{
    type Value = A::Value;
    fn entry(result: &Result<W, E>) -> Entry<'_, A::Value> {
        match result {
            Ok(v) => Entry::Value(A::value(v)),
            Err(_) => Entry::Skip,
        }
    }
    fn from_hit(value: Option<A::Value>) -> Option<Result<W, E>> {
        value.map(|v| Ok(A::wrap(v)))
    }
}

/// `Result<Option<T>, E>`: `Ok(None)` is stored as the null marker, `Err` never.
#[derive(Debug)]
pub struct FallibleOptional<A = Identity>(PhantomData<A>);

impl<W, E, A: Adapter<W>> Shape<Result<Option<W>, E>> for FallibleOptional<A>
where
    A::Value: Serialize + DeserializeOwned,
{
    type Value = A::Value;
    fn entry(result: &Result<Option<W>, E>) -> Entry<'_, A::Value> {
        match result {
            Ok(Some(v)) => Entry::Value(A::value(v)),
            Ok(None) => Entry::Absent,
            Err(_) => Entry::Skip,
        }
    }
    fn from_hit(value: Option<A::Value>) -> Option<Result<Option<W>, E>> {
        Some(Ok(value.map(A::wrap)))
    }
}

/// Shape selection for the macro, by autoref specialization: a method call on
/// `&&&&Probe<R>` resolves to the most specific level whose impl matches `R`'s structure.
/// Impls are unbounded, so a value that is not `Serialize` is reported about its return type,
/// not silently given another shape.
#[doc(hidden)]
pub mod select {
    use std::marker::PhantomData;

    /// The return type being matched.
    #[derive(Debug)]
    pub struct Probe<R>(PhantomData<fn() -> R>);

    impl<R> Probe<R> {
        /// A probe for `R`.
        pub const NEW: Self = Probe(PhantomData);
    }

    /// The selected shape `S` for return type `R`.
    #[derive(Debug)]
    pub struct Selected<S, R> {
        pub(crate) remote: Remote<S, R>,
    }

    impl<S, R> Selected<S, R> {
        /// The shape `S` for `R`, as `shape = S` names it.
        pub const NEW: Self = Selected {
            remote: Remote {
                fallback: Uncacheable(PhantomData),
            },
        };
    }

    /// What [`Selected`] derefs to when its value cannot be kept in the near cache (it is not
    /// `Clone + Send + Sync + 'static`): the path that always reads Redis.
    #[derive(Debug)]
    pub struct Remote<S, R> {
        pub(crate) fallback: Uncacheable<S, R>,
    }

    /// What [`Selected`] derefs to when its shape does not fit the return type.
    #[derive(Debug)]
    pub struct Uncacheable<S, R>(PhantomData<fn() -> (S, R)>);

    macro_rules! level {
        ($(#[$doc:meta])* $name:ident) => {
            $(#[$doc])*
            pub trait $name {
                /// The [`Selected`] shape.
                type Selected;
                /// Selects.
                fn __cached_select(&self) -> Self::Selected;
            }
        };
    }
    level!(
        /// `Result<Option<W<T>>, E>` for a framework wrapper `W`.
        Level3
    );
    level!(
        /// `Result<Option<T>, E>`, `Result<W<T>, E>`, `Option<W<T>>`.
        Level2
    );
    level!(
        /// `Result<T, E>`, `Option<T>`, `W<T>`.
        Level1
    );
    level!(
        /// Anything else: stored as is.
        Level0
    );

    macro_rules! select {
        ($level:ident, $refs:ty, [$($g:ident),*], $ty:ty => $shape:ty) => {
            impl<$($g),*> $level for $refs {
                type Selected = $crate::cache::shape::select::Selected<$shape, $ty>;
                #[inline]
                fn __cached_select(&self) -> Self::Selected {
                    $crate::cache::shape::select::Selected::NEW
                }
            }
        };
    }
    #[allow(unused_imports)]
    pub(crate) use select;

    use super::{Fallible, FallibleOptional, Optional, Plain};

    select!(Level2, &&Probe<Result<Option<T>, E>>, [T, E], Result<Option<T>, E> => FallibleOptional);
    select!(Level1, &Probe<Result<T, E>>, [T, E], Result<T, E> => Fallible);
    select!(Level1, &Probe<Option<T>>, [T], Option<T> => Optional);
    select!(Level0, Probe<T>, [T], T => Plain);
}

/// Registers a framework's response wrapper `$wrapper<T>` with its adapter: the four shapes
/// for it, and its place in shape selection. Adding a framework is one adapter type and one
/// call of this macro.
#[allow(unused_macros)]
macro_rules! framework_wrapper {
    ($($wrapper:ident)::+, $adapter:ty) => {
        use $crate::cache::shape::select::{select, Level1, Level2, Level3, Probe};
        select!(Level3, &&&Probe<Result<Option<$($wrapper)::+<T>>, E>>, [T, E],
            Result<Option<$($wrapper)::+<T>>, E> => $crate::cache::shape::FallibleOptional<$adapter>);
        select!(Level2, &&Probe<Result<$($wrapper)::+<T>, E>>, [T, E],
            Result<$($wrapper)::+<T>, E> => $crate::cache::shape::Fallible<$adapter>);
        select!(Level2, &&Probe<Option<$($wrapper)::+<T>>>, [T],
            Option<$($wrapper)::+<T>> => $crate::cache::shape::Optional<$adapter>);
        select!(Level1, &Probe<$($wrapper)::+<T>>, [T], $($wrapper)::+<T> => $crate::cache::shape::Plain<$adapter>);
    };
}
#[allow(unused_imports)]
pub(crate) use framework_wrapper;
