//! How a cached function's return type maps to stored entries.
//!
//! The macro picks the shape from the written return type; calling
//! [`Cache::get_or_fill`](crate::Cache::get_or_fill) directly, you pick it yourself.

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

/// `T`: every result is stored; a null marker is a miss.
#[derive(Debug)]
pub struct Plain;

impl<T: Serialize + DeserializeOwned> Shape<T> for Plain {
    type Value = T;
    fn entry(result: &T) -> Entry<'_, T> {
        Entry::Value(result)
    }
    fn from_hit(value: Option<T>) -> Option<T> {
        value
    }
}

/// `Option<T>`: `None` is stored as the null marker.
#[derive(Debug)]
pub struct Optional;

impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for Optional {
    type Value = T;
    fn entry(result: &Option<T>) -> Entry<'_, T> {
        match result {
            Some(v) => Entry::Value(v),
            None => Entry::Absent,
        }
    }
    fn from_hit(value: Option<T>) -> Option<Option<T>> {
        Some(value)
    }
}

/// `Result<T, E>`: `Ok` is stored, `Err` never.
#[derive(Debug)]
pub struct Fallible;

impl<T: Serialize + DeserializeOwned, E> Shape<Result<T, E>> for Fallible {
    type Value = T;
    fn entry(result: &Result<T, E>) -> Entry<'_, T> {
        match result {
            Ok(v) => Entry::Value(v),
            Err(_) => Entry::Skip,
        }
    }
    fn from_hit(value: Option<T>) -> Option<Result<T, E>> {
        value.map(Ok)
    }
}

/// `Result<Option<T>, E>`: `Ok(None)` is stored as the null marker, `Err` never.
#[derive(Debug)]
pub struct FallibleOptional;

impl<T: Serialize + DeserializeOwned, E> Shape<Result<Option<T>, E>> for FallibleOptional {
    type Value = T;
    fn entry(result: &Result<Option<T>, E>) -> Entry<'_, T> {
        match result {
            Ok(Some(v)) => Entry::Value(v),
            Ok(None) => Entry::Absent,
            Err(_) => Entry::Skip,
        }
    }
    fn from_hit(value: Option<T>) -> Option<Result<Option<T>, E>> {
        Some(Ok(value))
    }
}

/// `actix_web::web::Json<T>`: stored as `T`.
#[cfg(feature = "actix")]
#[derive(Debug)]
pub struct Json;

#[cfg(feature = "actix")]
impl<T: Serialize + DeserializeOwned> Shape<actix_web::web::Json<T>> for Json {
    type Value = T;
    fn entry(result: &actix_web::web::Json<T>) -> Entry<'_, T> {
        Entry::Value(&result.0)
    }
    fn from_hit(value: Option<T>) -> Option<actix_web::web::Json<T>> {
        value.map(actix_web::web::Json)
    }
}

/// `Result<actix_web::web::Json<T>, E>`: `Ok` stored as `T`, `Err` never.
#[cfg(feature = "actix")]
#[derive(Debug)]
pub struct FallibleJson;

#[cfg(feature = "actix")]
impl<T: Serialize + DeserializeOwned, E> Shape<Result<actix_web::web::Json<T>, E>>
    for FallibleJson
{
    type Value = T;
    fn entry(result: &Result<actix_web::web::Json<T>, E>) -> Entry<'_, T> {
        match result {
            Ok(v) => Entry::Value(&v.0),
            Err(_) => Entry::Skip,
        }
    }
    fn from_hit(value: Option<T>) -> Option<Result<actix_web::web::Json<T>, E>> {
        value.map(|v| Ok(actix_web::web::Json(v)))
    }
}

/// `Option<actix_web::web::Json<T>>` (Actix answers `None` with 404): `None` is stored as the
/// null marker.
#[cfg(feature = "actix")]
#[derive(Debug)]
pub struct OptionalJson;

#[cfg(feature = "actix")]
impl<T: Serialize + DeserializeOwned> Shape<Option<actix_web::web::Json<T>>> for OptionalJson {
    type Value = T;
    fn entry(result: &Option<actix_web::web::Json<T>>) -> Entry<'_, T> {
        match result {
            Some(v) => Entry::Value(&v.0),
            None => Entry::Absent,
        }
    }
    fn from_hit(value: Option<T>) -> Option<Option<actix_web::web::Json<T>>> {
        Some(value.map(actix_web::web::Json))
    }
}

/// `Result<Option<actix_web::web::Json<T>>, E>`: `Ok(None)` is stored as the null marker,
/// `Err` never.
#[cfg(feature = "actix")]
#[derive(Debug)]
pub struct FallibleOptionalJson;

#[cfg(feature = "actix")]
impl<T: Serialize + DeserializeOwned, E> Shape<Result<Option<actix_web::web::Json<T>>, E>>
    for FallibleOptionalJson
{
    type Value = T;
    fn entry(result: &Result<Option<actix_web::web::Json<T>>, E>) -> Entry<'_, T> {
        match result {
            Ok(Some(v)) => Entry::Value(&v.0),
            Ok(None) => Entry::Absent,
            Err(_) => Entry::Skip,
        }
    }
    fn from_hit(value: Option<T>) -> Option<Result<Option<actix_web::web::Json<T>>, E>> {
        Some(Ok(value.map(actix_web::web::Json)))
    }
}
