//! What the API sends and accepts, and the rules input must follow.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Items per page of `GET /items`.
pub const PAGE_SIZE: u32 = 20;
/// The highest page number accepted.
pub const MAX_PAGE: u32 = 10_000;
/// The highest price accepted, in currency units.
pub const MAX_PRICE: f64 = 1_000_000.0;
/// The longest item name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest category accepted, in characters.
pub const MAX_CATEGORY_CHARS: usize = 32;

/// A catalog item, as sent and as cached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Its id, assigned by the database and never reused.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Price in currency units, two decimals.
    pub price: f64,
    /// Category: `a-z`, `0-9` and `-`.
    pub category: String,
}

/// The body of `POST /items` and `PUT /items/{id}`, as received.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Display name.
    pub name: String,
    /// Price in currency units.
    pub price: f64,
    /// Category.
    pub category: String,
}

/// An [`ItemInput`] that passed [`ItemInput::validate`].
#[derive(Clone, Debug)]
pub(crate) struct NewItem {
    pub(crate) name: String,
    pub(crate) price_cents: i64,
    pub(crate) category: String,
}

impl ItemInput {
    /// Checks every field, naming the first one that is wrong.
    pub(crate) fn validate(self) -> Result<NewItem, ApiError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(bad("name must not be empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(bad(format!(
                "name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(bad("name must not contain control characters"));
        }
        let price_cents = price_cents(self.price)?;
        validate_category(&self.category)?;
        Ok(NewItem {
            name: name.to_owned(),
            price_cents,
            category: self.category,
        })
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// The price in cents: finite, `0..=MAX_PRICE`, at most two decimals.
fn price_cents(price: f64) -> Result<i64, ApiError> {
    if !price.is_finite() || price < 0.0 {
        return Err(bad(format!(
            "price must be a non-negative number, got {price}"
        )));
    }
    if price > MAX_PRICE {
        return Err(bad(format!("price must be at most {MAX_PRICE}")));
    }
    let cents = (price * 100.0).round();
    if (cents / 100.0 - price).abs() > 1e-9 {
        return Err(bad(format!(
            "price must have at most two decimals, got {price}"
        )));
    }
    // In range: 0 <= cents <= 1e8, an integer, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    Ok(cents as i64)
}

/// Converts stored cents back to the API's price.
#[allow(clippy::cast_precision_loss)] // cents are at most 1e8, exact in an f64
pub(crate) fn price_from_cents(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// A category is 1 to [`MAX_CATEGORY_CHARS`] characters of `a-z`, `0-9` and `-`.
pub(crate) fn validate_category(category: &str) -> Result<(), ApiError> {
    if category.is_empty() || category.len() > MAX_CATEGORY_CHARS {
        return Err(bad(format!(
            "category must be 1 to {MAX_CATEGORY_CHARS} characters of a-z, 0-9 and -"
        )));
    }
    if let Some(c) = category
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(bad(format!(
            "category {category:?} has the character {c:?}: use a-z, 0-9 and -"
        )));
    }
    Ok(())
}

fn first_page() -> u32 {
    1
}

/// The query of `GET /items`: `?category=books&page=2`, both optional. It is the list's cache
/// key, so `page` defaults to 1 here (not later) and `?category=books` and
/// `?category=books&page=1` share one entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only items of this category; all items when absent.
    pub category: Option<String>,
    /// 1-based page number.
    #[serde(default = "first_page")]
    pub page: u32,
}

impl ListQuery {
    pub(crate) fn validate(&self) -> Result<(), ApiError> {
        if let Some(c) = &self.category {
            validate_category(c)?;
        }
        if self.page == 0 || self.page > MAX_PAGE {
            return Err(bad(format!(
                "page must be between 1 and {MAX_PAGE}, got {}",
                self.page
            )));
        }
        Ok(())
    }
}

/// One page of `GET /items`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemPage {
    /// The category asked for, if any.
    pub category: Option<String>,
    /// This page's number.
    pub page: u32,
    /// Items per page.
    pub per_page: u32,
    /// Items matching, across all pages.
    pub total: u64,
    /// This page's items, by id.
    pub items: Vec<Item>,
}

/// The answer of `GET /fib/{n}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fib {
    /// The index asked for.
    pub n: u32,
    /// The `n`th Fibonacci number (`fib(0) = 0`, `fib(1) = 1`).
    pub value: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, price: f64, category: &str) -> ItemInput {
        ItemInput {
            name: name.to_owned(),
            price,
            category: category.to_owned(),
        }
    }

    #[test]
    fn valid_input_is_trimmed_and_priced_in_cents() {
        let item = input("  Lamp ", 19.99, "home-2")
            .validate()
            .expect("valid input");
        assert_eq!(item.name, "Lamp");
        assert_eq!(item.price_cents, 1999);
        assert_eq!(price_from_cents(item.price_cents), 19.99);
    }

    #[test]
    fn each_bad_field_is_named() {
        for (case, field) in [
            (input("", 1.0, "books"), "name"),
            (input("x", -1.0, "books"), "price"),
            (input("x", f64::NAN, "books"), "price"),
            (input("x", 1.234, "books"), "price"),
            (input("x", 1.0, "Books"), "category"),
            (input("x", 1.0, "a b"), "category"),
            (input("x", 1.0, ""), "category"),
        ] {
            match case.validate() {
                Err(ApiError::BadRequest(m)) => assert!(m.contains(field), "{m}"),
                other => panic!("expected a 400 naming {field}, got {other:?}"),
            }
        }
    }
}
