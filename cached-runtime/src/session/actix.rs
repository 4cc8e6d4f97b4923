//! actix-session's `SessionStore` for [`Sessions`] (feature `session-actix`).
//!
//! ```no_run
//! use actix_session::SessionMiddleware;
//! use actix_web::{App, HttpServer, cookie::Key};
//! use cached_runtime::{Redis, session::Sessions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
//! let sessions = Sessions::builder(&redis).user_field("user").build()?;
//! let key = Key::generate(); // load a fixed key in production
//! HttpServer::new(move || {
//!     App::new().wrap(SessionMiddleware::new(sessions.clone(), key.clone()))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Keep actix-session's default `TtlExtensionPolicy::OnStateChanges`: loads slide the expiry
//! already (once per refresh fraction), and `update_ttl` sends nothing.

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use time::Duration;

use super::{META_FIELD, Sessions};

fn std_ttl(store: &Sessions, ttl: &Duration) -> std::time::Duration {
    u64::try_from(ttl.whole_milliseconds())
        .ok()
        .filter(|ms| *ms > 0)
        .map_or(store.default_ttl(), std::time::Duration::from_millis)
}

fn key(id: String) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(id).map_err(anyhow::Error::new)
}

impl SessionStore for Sessions {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let loaded = Sessions::load(self, session_key.as_ref())
            .await
            .map_err(|e| LoadError::Other(anyhow::Error::new(e)))?;
        let Some(loaded) = loaded else {
            return Ok(None);
        };
        // actix-session stores JSON: anything else was not written by it.
        if loaded
            .fields
            .values()
            .any(|v| serde_json::from_str::<serde::de::IgnoredAny>(v).is_err())
        {
            self.corrupt();
            return Ok(None);
        }
        let mut state = loaded.fields;
        state.insert(META_FIELD.to_owned(), loaded.base.encode());
        Ok(Some(state))
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        let id = self
            .write(None, session_state, std_ttl(self, ttl), false)
            .await
            .map_err(|e| SaveError::Other(anyhow::Error::new(e)))?;
        key(id).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let id = self
            .write(
                Some(session_key.as_ref()),
                session_state,
                std_ttl(self, ttl),
                false,
            )
            .await
            .map_err(|e| UpdateError::Other(anyhow::Error::new(e)))?;
        key(id).map_err(UpdateError::Other)
    }

    async fn update_ttl(
        &self,
        _session_key: &SessionKey,
        _ttl: &Duration,
    ) -> Result<(), anyhow::Error> {
        // The load of this request slid the expiry already, when it was due.
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.end(session_key.as_ref())
            .await
            .map_err(anyhow::Error::new)
    }
}
