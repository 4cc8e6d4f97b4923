//! tower-sessions' `SessionStore` for [`Sessions`] (feature `session-tower`), for axum.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use cached_runtime::{Redis, session::Sessions};
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! async fn visits(session: Session) -> String {
//!     let n: u64 = session.get("visits").await.ok().flatten().unwrap_or(0);
//!     let _ = session.insert("visits", n + 1).await;
//!     format!("{}", n + 1)
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
//! let sessions = Sessions::builder(&redis).user_field("user").build()?;
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionManagerLayer::new(sessions));
//! # Ok(()) }
//! ```
//!
//! Ids are tower-sessions' own 128-bit `Id`, drawn here from the operating system's CSPRNG
//! when a session is created. tower-sessions' `save` cannot hand back a new id: a save whose
//! session has expired meanwhile recreates it under the same id, and a request still in flight
//! with a renewed id writes to the new session but keeps its old cookie.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use time::OffsetDateTime;
use tower_sessions_core::{
    SessionStore,
    session::{Id, Record},
    session_store::{Error, Result},
};

use super::{META_FIELD, Sessions, id_text, new_id, valid_id};

fn key(id: &Id) -> String {
    // The bits as they are: an `i128` read as the `u128` it was made from.
    id_text(id.0.cast_unsigned())
}

fn fields(record: &Record) -> Result<HashMap<String, String>> {
    record
        .data
        .iter()
        .map(|(k, v)| {
            let text = match (k.as_str(), v) {
                (META_FIELD, Value::String(s)) => s.clone(),
                _ => serde_json::to_string(v).map_err(|e| Error::Encode(e.to_string()))?,
            };
            Ok((k.clone(), text))
        })
        .collect()
}

fn ttl(store: &Sessions, record: &Record) -> Duration {
    let left = record.expiry_date - OffsetDateTime::now_utc();
    u64::try_from(left.whole_milliseconds())
        .ok()
        .filter(|ms| *ms > 0)
        .map_or(store.default_ttl(), Duration::from_millis)
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> Result<()> {
        let fields = fields(record)?;
        let id = self
            .write(None, fields, ttl(self, record), false)
            .await
            .map_err(backend)?;
        let bits = u128::from_str_radix(&id, 16).or_else(|_| new_id().map_err(backend))?;
        record.id = Id(bits.cast_signed());
        // Saved again in this request, the record replaces the session whole.
        record.data.remove(META_FIELD);
        Ok(())
    }

    async fn save(&self, record: &Record) -> Result<()> {
        let fields = fields(record)?;
        self.write(Some(&key(&record.id)), fields, ttl(self, record), true)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> Result<Option<Record>> {
        let id = key(session_id);
        debug_assert!(valid_id(&id));
        let Some(loaded) = Sessions::load(self, &id).await.map_err(backend)? else {
            return Ok(None);
        };
        let mut data = HashMap::with_capacity(loaded.fields.len() + 1);
        for (k, v) in loaded.fields {
            match serde_json::from_str(&v) {
                Ok(v) => {
                    data.insert(k, v);
                }
                Err(_) => {
                    // Not a value tower-sessions wrote: a new session starts.
                    self.corrupt();
                    return Ok(None);
                }
            }
        }
        data.insert(META_FIELD.to_owned(), Value::String(loaded.base.encode()));
        let left = time::Duration::milliseconds(i64::try_from(loaded.ttl_ms).unwrap_or(i64::MAX));
        Ok(Some(Record {
            id: *session_id,
            data,
            expiry_date: OffsetDateTime::now_utc() + left,
        }))
    }

    async fn delete(&self, session_id: &Id) -> Result<()> {
        self.end(&key(session_id)).await.map_err(backend)
    }
}
