//! The catalog in SQLite, and the counter of statements it ran.
//!
//! Every method here blocks: callers run them on a blocking thread (`web::block`), never on an
//! Actix worker.

use std::{
    path::Path,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{Item, ItemInput, PAGE_SIZE, price_from_cents};

/// How many items a new database is seeded with.
pub const SEED_ITEMS: usize = 300;

/// The list queries: one per case, so the filtered ones search the `(category, id)` index
/// (an `?1 IS NULL OR category = ?1` in one statement would make SQLite scan the table).
const COUNT_ALL: &str = "SELECT COUNT(*) FROM items";
const COUNT_IN: &str = "SELECT COUNT(*) FROM items WHERE category = ?1";
const PAGE_ALL: &str = "SELECT id, name, price_cents, category FROM items
                        ORDER BY id LIMIT ?1 OFFSET ?2";
const PAGE_IN: &str = "SELECT id, name, price_cents, category FROM items
                       WHERE category = ?1 ORDER BY id LIMIT ?2 OFFSET ?3";

/// The schema version written to `PRAGMA user_version` once the database is created and
/// seeded; a database at this version is opened as it is.
const SCHEMA_VERSION: i64 = 1;

/// The catalog database.
///
/// One connection behind a `Mutex`, not a pool: SQLite serialises writers anyway, every
/// request holds the lock for one or two indexed statements (microseconds), and the Redis
/// cache in front absorbs repeated reads, which is the load a reader pool would spread. A pool
/// would add a dependency and WAL bookkeeping for no gain this service can show on two cores.
/// The lock is only ever taken on blocking threads, so a waiting request never stalls an Actix
/// worker.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
    queries: AtomicU64,
    /// A simulated outage (`POST /admin/db/outage`): every query fails while set.
    down: std::sync::atomic::AtomicBool,
}

impl Db {
    /// Opens (creating when missing) the database at `path`; a new one gets the schema and
    /// [`SEED_ITEMS`] items.
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            let tx = conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS items (
                     -- AUTOINCREMENT: a deleted id is never handed out again.
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     name TEXT NOT NULL,
                     price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
                     category TEXT NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS items_by_category ON items (category, id);",
            )?;
            seed(&tx)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            queries: AtomicU64::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// SQL statements run for requests since start (health checks excluded).
    pub(crate) fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Counts `n` statements and returns the connection.
    fn conn(&self, n: u64) -> MutexGuard<'_, Connection> {
        self.queries.fetch_add(n, Ordering::Relaxed);
        // A panic while holding the lock cannot leave SQLite half-written: each statement and
        // transaction is atomic, so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The item with `id`, if any.
    pub(crate) fn get(&self, id: u64) -> rusqlite::Result<Option<Item>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.conn(1)
            .prepare_cached("SELECT id, name, price_cents, category FROM items WHERE id = ?1")?
            .query_row([id], item_from_row)
            .optional()
    }

    /// Page `page` (1-based) of the items of `category` (all when `None`), by id, and how
    /// many items match in total.
    pub(crate) fn list(
        &self,
        category: Option<&str>,
        page: u32,
    ) -> rusqlite::Result<(Vec<Item>, u64)> {
        let offset = i64::from(page.saturating_sub(1)) * i64::from(PAGE_SIZE);
        let conn = self.conn(2);
        let (total, items): (i64, Vec<Item>) = match category {
            Some(c) => (
                conn.prepare_cached(COUNT_IN)?
                    .query_row([c], |r| r.get(0))?,
                conn.prepare_cached(PAGE_IN)?
                    .query_map(params![c, PAGE_SIZE, offset], item_from_row)?
                    .collect::<rusqlite::Result<_>>()?,
            ),
            None => (
                conn.prepare_cached(COUNT_ALL)?
                    .query_row([], |r| r.get(0))?,
                conn.prepare_cached(PAGE_ALL)?
                    .query_map(params![PAGE_SIZE, offset], item_from_row)?
                    .collect::<rusqlite::Result<_>>()?,
            ),
        };
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    /// Inserts a new item and returns it with its id.
    pub(crate) fn insert(&self, item: &ItemInput) -> rusqlite::Result<Item> {
        self.conn(1)
            .prepare_cached(
                "INSERT INTO items (name, price_cents, category) VALUES (?1, ?2, ?3)
                 RETURNING id, name, price_cents, category",
            )?
            .query_row(
                params![item.name, item.price_cents, item.category],
                item_from_row,
            )
    }

    /// Replaces the item with `id`; returns its category before the update and the item after,
    /// or `None` when there is no such item.
    pub(crate) fn update(
        &self,
        id: u64,
        item: &ItemInput,
    ) -> rusqlite::Result<Option<(String, Item)>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let mut conn = self.conn(2);
        let tx = conn.transaction()?;
        let old: Option<String> = tx
            .prepare_cached("SELECT category FROM items WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(old) = old else {
            return Ok(None);
        };
        let updated = tx
            .prepare_cached(
                "UPDATE items SET name = ?2, price_cents = ?3, category = ?4 WHERE id = ?1
                 RETURNING id, name, price_cents, category",
            )?
            .query_row(
                params![id, item.name, item.price_cents, item.category],
                item_from_row,
            )?;
        tx.commit()?;
        Ok(Some((old, updated)))
    }

    /// Deletes the item with `id`; returns it, or `None` when there was none.
    pub(crate) fn delete(&self, id: u64) -> rusqlite::Result<Option<Item>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.conn(1)
            .prepare_cached(
                "DELETE FROM items WHERE id = ?1 RETURNING id, name, price_cents, category",
            )?
            .query_row([id], item_from_row)
            .optional()
    }

    /// How many items there are (for the startup log; not counted).
    pub(crate) fn count_items(&self) -> rusqlite::Result<u64> {
        let n: i64 = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The categories that have items (for the startup survey; not counted).
    pub(crate) fn categories(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .prepare("SELECT DISTINCT category FROM items ORDER BY category")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    /// Holds the connection, as a long statement would.
    #[cfg(test)]
    pub(crate) fn lock_for_test(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts or ends a simulated outage: while down, every query fails.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Whether a simulated outage is on.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Checks the database answers (not counted in [`queries`](Self::queries)).
    pub(crate) fn ping(&self) -> rusqlite::Result<()> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .query_row("SELECT 1", [], |_| Ok(()))
    }
}

fn item_from_row(row: &Row<'_>) -> rusqlite::Result<Item> {
    let id: i64 = row.get(0)?;
    Ok(Item {
        // SQLite's rowids are positive (AUTOINCREMENT starts at 1).
        id: u64::try_from(id).unwrap_or(0),
        name: row.get(1)?,
        price: price_from_cents(row.get(2)?),
        category: row.get(3)?,
    })
}

/// Deterministic seed data: every combination of a few adjectives and each category's nouns.
fn seed(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    const ADJECTIVES: [&str; 10] = [
        "Classic", "Compact", "Deluxe", "Everyday", "Vintage", "Modern", "Rugged", "Tiny", "Grand",
        "Quiet",
    ];
    const CATEGORIES: [(&str, [&str; 5]); 6] = [
        (
            "books",
            [
                "Atlas",
                "Cookbook",
                "Novel",
                "Field Guide",
                "Poetry Collection",
            ],
        ),
        (
            "music",
            [
                "Vinyl Record",
                "Ukulele",
                "Metronome",
                "Harmonica",
                "Songbook",
            ],
        ),
        (
            "games",
            [
                "Chess Set",
                "Puzzle",
                "Card Deck",
                "Board Game",
                "Dice Tower",
            ],
        ),
        (
            "garden",
            ["Trowel", "Watering Can", "Planter", "Seed Kit", "Hose Reel"],
        ),
        (
            "kitchen",
            ["Kettle", "Skillet", "Teapot", "Knife Block", "Spice Rack"],
        ),
        (
            "tools",
            [
                "Hammer",
                "Tape Measure",
                "Screwdriver Set",
                "Level",
                "Hand Saw",
            ],
        ),
    ];
    let mut insert =
        tx.prepare("INSERT INTO items (name, price_cents, category) VALUES (?1, ?2, ?3)")?;
    let mut n: i64 = 0;
    for adjective in ADJECTIVES {
        for (category, nouns) in CATEGORIES {
            for noun in nouns {
                n += 1;
                let price_cents = 199 + (n * 7_919) % 9_800;
                insert.execute(params![
                    format!("{adjective} {noun}"),
                    price_cents,
                    category
                ])?;
            }
        }
    }
    debug_assert_eq!(usize::try_from(n).ok(), Some(SEED_ITEMS));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A seeded database in a temp file, removed on drop.
    pub(crate) struct TempDb {
        pub(crate) db: std::sync::Arc<Db>,
        path: std::path::PathBuf,
    }

    impl TempDb {
        pub(crate) fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("demo-unit-{name}-{}.db", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let db = Db::open(&path).expect("open a fresh database").into();
            Self { db, path }
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// SQLite's plan for `sql`, one step per line.
    fn plan(db: &Db, sql: &str) -> String {
        let conn = db.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("a valid statement");
        // Unbound parameters are NULL; the plan does not depend on their values.
        let params = vec![rusqlite::types::Null; stmt.parameter_count()];
        let steps: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .expect("a plan")
            .collect::<rusqlite::Result<_>>()
            .expect("plan rows");
        steps.join("\n")
    }

    #[test]
    fn the_filtered_list_searches_the_category_index_and_sorts_nothing() {
        let t = TempDb::new("plan");
        for sql in [COUNT_IN, PAGE_IN] {
            let steps = plan(&t.db, sql);
            assert!(
                steps.contains("SEARCH items USING")
                    && steps.contains("INDEX items_by_category (category=?)"),
                "{sql}: {steps}"
            );
            assert!(!steps.contains("TEMP B-TREE"), "{sql}: {steps}");
        }
        // The unfiltered page walks the table in id order, without a sort either.
        let steps = plan(&t.db, PAGE_ALL);
        assert!(!steps.contains("TEMP B-TREE"), "{steps}");
        // What the single statement did: a scan, which this test tells apart.
        let old = plan(
            &t.db,
            "SELECT id FROM items WHERE ?1 IS NULL OR category = ?1 ORDER BY id",
        );
        assert!(!old.contains("(category=?)"), "{old}");
    }

    #[test]
    fn lists_count_and_page_by_category() {
        let t = TempDb::new("list");
        let (all, total) = t.db.list(None, 1).expect("list");
        assert_eq!(total, SEED_ITEMS as u64);
        assert_eq!(all.len(), PAGE_SIZE as usize);
        let (books, in_books) = t.db.list(Some("books"), 3).expect("list");
        assert_eq!(in_books, 50);
        assert_eq!(books.len(), 10);
        assert!(books.iter().all(|i| i.category == "books"));
        assert!(books.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(t.db.list(Some("nothing"), 1).expect("list"), (vec![], 0));
        assert_eq!(
            t.db.categories().expect("categories"),
            ["books", "games", "garden", "kitchen", "music", "tools"]
        );
    }
}
