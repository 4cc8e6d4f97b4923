//! Reacting to a Sentinel failover as it is announced.
//!
//! A reconnect asks the sentinels for the primary, and a demoted node's `READONLY` reply or a
//! dropped connection makes one; but a primary demoted without losing its connections keeps
//! answering reads until the next write fails. So the cache also listens on a sentinel for
//! `+switch-master` and, for its own master, replaces every connection at once.
//!
//! The listener only hastens what errors would bring about anyway: if every sentinel is
//! unreachable it retries with back-off, and the cache works meanwhile.
//!
//! Finding the primary ([`SentinelPrimary`]) is this crate's own, so the sentinels and the
//! primary are dialled like every other server: each over TLS or not, with its own
//! credentials.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::StreamExt;
use redis::{
    AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, Value, aio::MultiplexedConnection,
};
use tokio::sync::watch;

use super::{
    connector::is_refused,
    dial::{Addr, Dialer, Server},
    pool::Pool,
};
use crate::spawn::Spawner;

/// The primary of one master, as the sentinels name it.
pub(crate) struct SentinelPrimary {
    pub(crate) master: String,
    pub(crate) sentinels: Vec<Server>,
    /// To the sentinels, with the credentials of their URLs.
    pub(crate) to_sentinels: Dialer,
    /// To the primary, with `primary`'s credentials or the provider's.
    pub(crate) to_primary: Dialer,
    pub(crate) primary: redis::RedisConnectionInfo,
}

impl SentinelPrimary {
    /// Asks the sentinels in turn where the primary is and connects to it with `config`
    /// and `protocol`, checking it still is the primary (a sentinel may lag a failover).
    pub(crate) async fn connect(
        &self,
        config: AsyncConnectionConfig,
        protocol: redis::ProtocolVersion,
    ) -> RedisResult<MultiplexedConnection> {
        let mut last = None;
        for sentinel in &self.sentinels {
            let addr = match self.ask(sentinel).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    last = Some(RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "a sentinel does not know the master",
                        self.master.clone(),
                    )));
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a sentinel did not answer; asking the next");
                    last = Some(e);
                    continue;
                }
            };
            let redis = self.primary.clone().set_protocol(protocol);
            let mut conn = match self.to_primary.connect(&addr, &redis, config.clone()).await {
                Ok(conn) => conn,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match redis::cmd("ROLE")
                .query_async::<Vec<Value>>(&mut conn)
                .await
            {
                Ok(role) if matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") => {
                    return Ok(conn);
                }
                // A user refused ROLE: the sentinel's word is all there is.
                Err(e) if is_refused(&e) => return Ok(conn),
                Err(e) => last = Some(e),
                Ok(_) => {
                    last = Some(RedisError::from((
                        ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                        "the node a sentinel named is not the primary",
                    )));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((ErrorKind::EmptySentinelList, "no sentinel is configured"))
        }))
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on `sentinel`.
    async fn ask(&self, sentinel: &Server) -> RedisResult<Option<Addr>> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.to_sentinels.connect_timeout()));
        let mut conn = self
            .to_sentinels
            .connect(&sentinel.addr, &sentinel.redis, config)
            .await?;
        let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async(&mut conn)
            .await?;
        Ok(reply.map(|(host, port)| Addr::Tcp(host, port)))
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Listens for `+switch-master` of `master` on the first sentinel that answers, until
/// `closed` reports the cache gone.
pub(super) fn watch_switches(
    store: Weak<Pool>,
    primary: Arc<SentinelPrimary>,
    mut closed: watch::Receiver<()>,
    spawner: &Spawner,
) {
    spawner.spawn(async move {
        let mut backoff = BACKOFF_MIN;
        for sentinel in primary.sentinels.iter().cycle() {
            let listen = listen(&store, &primary, sentinel);
            tokio::select! {
                // The sender lives in the store: an error means the cache was dropped.
                _ = closed.changed() => return,
                result = listen => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "sentinel failover listener lost its sentinel; trying the next");
                    } else {
                        backoff = BACKOFF_MIN;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

/// One subscription: returns when the sentinel's connection ends.
async fn listen(
    store: &Weak<Pool>,
    primary: &SentinelPrimary,
    sentinel: &Server,
) -> redis::RedisResult<()> {
    let master = primary.master.as_str();
    let mut pubsub = primary
        .to_sentinels
        .pubsub(&sentinel.addr, &sentinel.redis)
        .await?;
    pubsub.subscribe("+switch-master").await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        // `<master name> <old ip> <old port> <new ip> <new port>`
        let payload: String = message.get_payload()?;
        if payload.split(' ').next() != Some(master) {
            continue;
        }
        let Some(store) = store.upgrade() else {
            return Ok(());
        };
        tracing::info!(announcement = %payload, "sentinel announced a new primary; reconnecting");
        store.reconnect_all();
    }
    Ok(())
}
