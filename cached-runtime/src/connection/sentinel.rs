//! Reacting to a Sentinel failover as it is announced.
//!
//! A reconnect asks the sentinels for the primary, and a demoted node's `READONLY` reply or a
//! dropped connection makes one; but a primary demoted without losing its connections keeps
//! answering reads until the next write fails. So the cache also listens on a sentinel for
//! `+switch-master` and, for its own master, replaces every connection at once.
//!
//! The listener only hastens what errors would bring about anyway: if every sentinel is
//! unreachable it retries with back-off, and the cache works meanwhile.

use std::{sync::Weak, time::Duration};

use futures_util::StreamExt;
use redis::{Client, ConnectionInfo};
use tokio::sync::watch;

use super::pool::Pool;
use crate::spawn::Spawner;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Listens for `+switch-master` of `master` on the first sentinel that answers, until
/// `closed` reports the cache gone.
pub(super) fn watch_switches(
    store: Weak<Pool>,
    sentinels: Vec<ConnectionInfo>,
    master: String,
    connect_timeout: Duration,
    mut closed: watch::Receiver<()>,
    spawner: &Spawner,
) {
    spawner.spawn(async move {
        let mut backoff = BACKOFF_MIN;
        for info in sentinels.iter().cycle() {
            let listen = listen(&store, info, &master, connect_timeout);
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
    info: &ConnectionInfo,
    master: &str,
    connect_timeout: Duration,
) -> redis::RedisResult<()> {
    let client = Client::open(info.clone())?;
    let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
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
