//! The catalog in SQLite (a slice of the Actix demo's): items with a name, a price and a
//! category, seeded deterministically, and a count of the statements run for requests.
//!
//! Every method blocks: callers run them on a blocking thread.

use std::{
    path::Path,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// How many items a new database is seeded with.
pub const SEED_ITEMS: u64 = 100;
/// Items per page of `GET /items`.
pub(crate) const PAGE_SIZE: u32 = 10;
const CATEGORIES: [&str; 4] = ["books", "games", "music", "tools"];

/// A catalog item, as sent and as cached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Its id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: u64,
    /// One of a few categories.
    pub category: String,
}

/// One connection behind a mutex: enough for a demo whose reads the cache absorbs.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
    queries: AtomicU64,
}

impl Db {
    /// Opens the database at `path`, creating and seeding it when it has no items table.
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 price_cents INTEGER NOT NULL,
                 category TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS items_by_category ON items (category, id);",
        )?;
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
        if count == 0 {
            let mut insert = tx.prepare(
                "INSERT INTO items (id, name, price_cents, category) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for id in 1..=SEED_ITEMS as i64 {
                let category = CATEGORIES[id.rem_euclid(4) as usize];
                let name = format!("{category} #{id}");
                insert.execute(params![id, name, id * 137 % 10_000, category])?;
            }
        }
        tx.commit()?;
        Ok(Self {
            conn: Mutex::new(conn),
            queries: AtomicU64::new(0),
        })
    }

    /// Statements run for requests since start.
    pub(crate) fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn conn(&self, statements: u64) -> MutexGuard<'_, Connection> {
        self.queries.fetch_add(statements, Ordering::Relaxed);
        // Each statement is atomic: a panic while holding the lock leaves SQLite usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: u64) -> rusqlite::Result<Option<Item>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.conn(1)
            .prepare_cached("SELECT id, name, price_cents, category FROM items WHERE id = ?1")?
            .query_row([id], item)
            .optional()
    }

    /// Page `page` (1-based) of `category` (every item when `None`), by id.
    pub(crate) fn list(&self, category: Option<&str>, page: u32) -> rusqlite::Result<Vec<Item>> {
        let offset = i64::from(page.saturating_sub(1)) * i64::from(PAGE_SIZE);
        self.conn(1)
            .prepare_cached(
                "SELECT id, name, price_cents, category FROM items
                 WHERE ?1 IS NULL OR category = ?1 ORDER BY id LIMIT ?2 OFFSET ?3",
            )?
            .query_map(params![category, PAGE_SIZE, offset], item)?
            .collect()
    }

    /// Renames and reprices item `id`; `None` when there is none.
    pub(crate) fn update(
        &self,
        id: u64,
        name: &str,
        price_cents: u64,
    ) -> rusqlite::Result<Option<Item>> {
        let (Ok(id), Ok(price)) = (i64::try_from(id), i64::try_from(price_cents)) else {
            return Ok(None);
        };
        self.conn(1)
            .prepare_cached(
                "UPDATE items SET name = ?2, price_cents = ?3 WHERE id = ?1
                 RETURNING id, name, price_cents, category",
            )?
            .query_row(params![id, name, price], item)
            .optional()
    }

    pub(crate) fn ping(&self) -> rusqlite::Result<()> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .query_row("SELECT 1", [], |_| Ok(()))
    }
}

fn item(row: &Row<'_>) -> rusqlite::Result<Item> {
    let id: i64 = row.get(0)?;
    let price: i64 = row.get(2)?;
    Ok(Item {
        // Written from `u64`s by this module: never negative.
        id: u64::try_from(id).unwrap_or(0),
        name: row.get(1)?,
        price_cents: u64::try_from(price).unwrap_or(0),
        category: row.get(3)?,
    })
}
