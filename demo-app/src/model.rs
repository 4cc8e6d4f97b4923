//! What the API sends and accepts, and the rules input must follow.

use serde::{Deserialize, Serialize};

/// Items per page of `GET /items`.
pub const PAGE_SIZE: u32 = 20;
/// The highest page number accepted: with the known categories, this bounds how many list
/// pages anonymous traffic can make the cache hold (1,000 items per category are listable;
/// deeper browsing would need a cursor, which `OFFSET` paging is not).
pub const MAX_PAGE: u32 = 50;
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

/// The body of `POST /items` and `PUT /items/{id}`: `{"name": …, "price": …, "category": …}`,
/// validated while it is extracted, so a handler only ever sees good input and a bad body is
/// a 400 naming the field before anything is read or written.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawItemInput")]
pub struct ItemInput {
    pub(crate) name: String,
    pub(crate) price_cents: i64,
    pub(crate) category: String,
}

/// The body as JSON values, so a wrong type is reported with the field's name (serde's own
/// message names only the type and a column).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItemInput {
    name: serde_json::Value,
    price: serde_json::Value,
    category: serde_json::Value,
}

impl TryFrom<RawItemInput> for ItemInput {
    type Error = String;

    fn try_from(raw: RawItemInput) -> Result<Self, String> {
        let serde_json::Value::String(name) = raw.name else {
            return Err(format!("name must be a string, got {}", raw.name));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err("name must not be empty".to_owned());
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(format!("name must be at most {MAX_NAME_CHARS} characters"));
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters".to_owned());
        }
        let Some(price) = raw.price.as_f64() else {
            return Err(format!("price must be a number, got {}", raw.price));
        };
        let price_cents = price_cents(price)?;
        let serde_json::Value::String(category) = raw.category else {
            return Err(format!("category must be a string, got {}", raw.category));
        };
        validate_category(&category)?;
        Ok(Self {
            name: name.to_owned(),
            price_cents,
            category,
        })
    }
}

/// The price in cents: finite, `0..=MAX_PRICE`, at most two decimals.
fn price_cents(price: f64) -> Result<i64, String> {
    if !price.is_finite() || price < 0.0 {
        return Err(format!("price must be a non-negative number, got {price}"));
    }
    if price > MAX_PRICE {
        return Err(format!("price must be at most {MAX_PRICE}, got {price}"));
    }
    let cents = (price * 100.0).round();
    if (cents / 100.0 - price).abs() > 1e-9 {
        return Err(format!("price must have at most two decimals, got {price}"));
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
fn validate_category(category: &str) -> Result<(), String> {
    if category.is_empty() || category.len() > MAX_CATEGORY_CHARS {
        return Err(format!(
            "category must be 1 to {MAX_CATEGORY_CHARS} characters of a-z, 0-9 and -"
        ));
    }
    if let Some(c) = category
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "category {category:?} has the character {c:?}: use a-z, 0-9 and -"
        ));
    }
    Ok(())
}

/// The query of `GET /items`: `?category=books&page=2`, both optional, validated while it is
/// extracted. It is the list's cache key, so `page` defaults to 1 here (not later) and
/// `?category=books` and `?category=books&page=1` share one entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawListQuery")]
pub struct ListQuery {
    /// Only items of this category; all items when absent.
    pub category: Option<String>,
    /// 1-based page number.
    pub page: u32,
}

/// The query as text, so a bad page is reported by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListQuery {
    category: Option<String>,
    page: Option<String>,
}

impl TryFrom<RawListQuery> for ListQuery {
    type Error = String;

    fn try_from(raw: RawListQuery) -> Result<Self, String> {
        if let Some(c) = &raw.category {
            validate_category(c)?;
        }
        let page = match raw.page {
            None => 1,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| (1..=MAX_PAGE).contains(p))
                .ok_or_else(|| {
                    format!("page must be an integer from 1 to {MAX_PAGE}, got {p:?}")
                })?,
        };
        Ok(Self {
            category: raw.category,
            page,
        })
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

/// The highest `n` of `GET /fib/{n}`: the naive recursion makes about `fib(n)` calls, ~1.6 ×
/// 10^8 at 40, well under a second in a release build.
pub const MAX_FIB_N: u32 = 40;

/// The `n` of `GET /fib/{n}`, checked against [`MAX_FIB_N`] while the path is extracted, so an
/// out-of-range `n` is a 400 before the cache is asked. Keyed as the bare number (`fib:38`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32")]
pub struct FibN(u32);

impl FibN {
    /// The index.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for FibN {
    type Error = String;

    fn try_from(n: u32) -> Result<Self, String> {
        if n > MAX_FIB_N {
            return Err(format!("n must be at most {MAX_FIB_N}, got {n}"));
        }
        Ok(Self(n))
    }
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

    fn input(name: &str, price: serde_json::Value, category: &str) -> Result<ItemInput, String> {
        RawItemInput {
            name: name.into(),
            price,
            category: category.into(),
        }
        .try_into()
    }

    #[test]
    fn valid_input_is_trimmed_and_priced_in_cents() {
        let item = input("  Lamp ", 19.99.into(), "home-2").expect("valid input");
        assert_eq!(item.name, "Lamp");
        assert_eq!(item.price_cents, 1999);
        assert_eq!(price_from_cents(item.price_cents), 19.99);
    }

    #[test]
    fn each_bad_field_is_named() {
        for (case, field) in [
            (input("", 1.0.into(), "books"), "name"),
            (input("x", (-1.0).into(), "books"), "price"),
            (input("x", "cheap".into(), "books"), "price"),
            (input("x", 1.234.into(), "books"), "price"),
            (input("x", 1e9.into(), "books"), "price"),
            (input("x", 1.0.into(), "Books"), "category"),
            (input("x", 1.0.into(), "a b"), "category"),
            (input("x", 1.0.into(), ""), "category"),
        ] {
            match case {
                Err(m) => assert!(m.starts_with(field), "{m}"),
                Ok(i) => panic!("expected an error naming {field}, got {i:?}"),
            }
        }
    }

    #[test]
    fn list_query_defaults_and_bounds_the_page() {
        let q: ListQuery = serde_json::from_str(r#"{"category": "books"}"#).expect("valid");
        assert_eq!(q.page, 1);
        for page in ["0", "abc", "-1", "51", "10001"] {
            let e = ListQuery::try_from(RawListQuery {
                category: None,
                page: Some(page.to_owned()),
            })
            .expect_err("bad page");
            assert!(e.starts_with("page"), "{e}");
        }
    }
}
