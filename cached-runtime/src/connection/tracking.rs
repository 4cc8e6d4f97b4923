//! The invalidation channel: one RESP3 connection per primary that asked Redis to report
//! every change to the keys under a prefix (`CLIENT TRACKING ON BCAST PREFIX …`), delivered to
//! a [`TrackingListener`] (the near cache is one).
//!
//! BCAST mode reports every change under the prefix whoever reads or writes it, so the data
//! connections stay as they are (no per-read tracking state on the server, the hit path
//! unchanged) and one connection per primary is all a process needs. Invalidations are
//! applied in the connection's reader, before any later reply on it is delivered: a `PING`
//! answered on every tracking connection ([`Tracking::sync`]) means every invalidation Redis
//! sent before it has been applied.
//!
//! The connections also carry `NOLOOP`, and writes whose result the listener keeps (a near
//! cache's fills) are sent on them ([`Tracking::set`]): Redis reports a key to a NOLOOP client unless the
//! last change of it in the batch was that client's own, so a fill's own write does not come
//! back to evict what it stored, and anyone else's later write still does. (Counting echoes
//! instead would be wrong: BCAST reports a key once per event-loop pass, so a foreign write
//! in the same pass would hide behind the echo.)
//!
//! A supervisor task owns the session: it connects to every primary (the one server, the
//! primary Sentinel names, or every primary in `CLUSTER SLOTS`), then starts the listener,
//! and checks once a second that each connection answers `ROLE` as a primary and, on a
//! cluster, that the set of primaries did not change. Any failure, a lost connection, a
//! demoted node, new primaries, ends the session: the listener is stopped at once, and a new
//! session starts with back-off. A panic in the task starts a new one.
//!
//! The session also ends the moment the pool replaces its data connections (the pool's
//! topology epoch changes: Sentinel announced a new primary, or a circuit opened). A primary
//! demoted by a manual failover keeps answering `ROLE` as one for seconds, and writes on the
//! new primary would go unreported meanwhile; this way the tracking connections move when
//! the data connections do.

use std::{
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, RedisError, Value,
    aio::MultiplexedConnection,
};
use tokio::sync::{Notify, watch};

use super::{
    Redis,
    cluster::key_slot,
    connector::{Deployment, answers, is_refused, refused_command},
    dial::Addr,
    pool::Pool,
};
use crate::{error::CacheError, spawn::Spawner};

/// What an invalidation channel reports to. Its methods run in a connection's reader: they
/// must be quick and must not block.
pub trait TrackingListener: Send + Sync {
    /// Tracking is not established (at start, after a connection was lost, after the topology
    /// changed): changes may go unreported from now until [`start`](Self::start), so drop
    /// whatever relies on them.
    fn stop(&self);
    /// Every tracking connection is up: every change from now on is reported.
    fn start(&self);
    /// `key` changed (written, deleted, expired or evicted, by any client); `None`: every key
    /// (a flush).
    fn invalidated(&self, key: Option<&[u8]>);
}

/// The listener and the session that is current: messages and losses of an older session's
/// connections never stop or start the listener.
struct Sessions {
    listener: Weak<dyn TrackingListener>,
    /// (current session, whether it serves)
    state: Mutex<(u64, bool)>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session: the listener stops trusting what it kept. `None`: it is gone.
    fn begin(&self) -> Option<u64> {
        let listener = self.listener.upgrade()?;
        let mut state = self.lock();
        *state = (state.0 + 1, false);
        listener.stop();
        Some(state.0)
    }

    /// Every connection of `session` is up.
    fn serve(&self, session: u64) {
        let Some(listener) = self.listener.upgrade() else {
            return;
        };
        let mut state = self.lock();
        if state.0 == session {
            state.1 = true;
            listener.start();
        }
    }

    /// A connection of `session` was lost; whether it was the current session.
    fn lost(&self, session: u64) -> bool {
        let mut state = self.lock();
        if state.0 != session {
            return false;
        }
        state.1 = false;
        if let Some(listener) = self.listener.upgrade() {
            listener.stop();
        }
        true
    }

    fn is_serving(&self) -> bool {
        self.lock().1
    }
}

/// How often each tracking connection is checked.
const HEARTBEAT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Retry period against a server that has no client tracking (it may be upgraded, or a
/// failover may reach one that has it).
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(60);

/// The live tracking session: its connections, and on a cluster which one owns which slots.
#[derive(Default)]
struct Session {
    links: Vec<MultiplexedConnection>,
    /// Slot ranges (first, last) and the index in `links` of their primary; empty off a
    /// cluster.
    slots: Vec<(i64, i64, usize)>,
}

/// A running invalidation channel ([`Redis::track`]): its connections, for
/// [`Tracking::sync`] and for writes that must not be reported back ([`Tracking::set`]).
pub struct Tracking {
    session: Mutex<Session>,
    /// Bound on a `PING` of [`Tracking::sync`].
    timeout: Duration,
    /// Bound on a `SET`: the cache's command timeout.
    command_timeout: Duration,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking").finish_non_exhaustive()
    }
}

impl Tracking {
    /// Returns once every invalidation Redis sent before this call has been delivered: one
    /// `PING` per tracking connection, answered after the messages queued before it.
    pub async fn sync(&self) -> Result<(), CacheError> {
        let links = self.lock().links.clone();
        for mut link in links {
            // Any reply will do (`NOPERM` too, for a user refused PING): it comes after them.
            match tokio::time::timeout(self.timeout, answers(&mut link)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(CacheError::Connection(Box::new(e))),
                Err(_) => return Err(CacheError::Timeout(self.timeout)),
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_session(&self, session: Session) {
        *self.lock() = session;
    }

    /// The tracking connection of the primary that owns `key`.
    fn link_for(&self, key: &str) -> Option<MultiplexedConnection> {
        let session = self.lock();
        if session.slots.is_empty() {
            return session.links.first().cloned();
        }
        let slot = i64::from(key_slot(key.as_bytes()));
        session
            .slots
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .and_then(|(_, _, i)| session.links.get(*i).cloned())
    }

    /// `SET key value EX secs` on the tracking connection of the key's primary, so Redis
    /// does not report it back (`NOLOOP`). An error (no session, a resharded slot's `MOVED`,
    /// a timeout) leaves the write to the data path.
    pub(crate) async fn set(&self, key: &str, value: &[u8], secs: u64) -> Result<(), CacheError> {
        let Some(mut link) = self.link_for(key) else {
            return Err(CacheError::Unavailable);
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("EX").arg(secs);
        match tokio::time::timeout(self.command_timeout, cmd.query_async::<()>(&mut link)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CacheError::Connection(Box::new(e))),
            Err(_) => Err(CacheError::Timeout(self.command_timeout)),
        }
    }
}

/// Everything the supervisor needs, shared by its restarts.
struct Supervisor {
    store: Weak<Pool>,
    sessions: Arc<Sessions>,
    tracker: Weak<Tracking>,
    endpoints: Deployment,
    /// `CLIENT TRACKING` arguments after `ON BCAST`.
    prefix: Option<String>,
    client_name: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    closed: watch::Receiver<()>,
    spawner: Spawner,
}

/// Starts tracking keys under `prefix` for `listener` on `redis`'s deployment; the task ends
/// with the connection's pool, the listener or the returned handle.
pub(crate) fn start(
    redis: &Redis,
    prefix: Option<&str>,
    client_name: &str,
    listener: Weak<dyn TrackingListener>,
) -> Result<Arc<Tracking>, CacheError> {
    let config = redis.config();
    let store = redis.pool();
    let url = config.topology.describe(&config.url);
    let endpoints = Deployment::new(config, &url)?;
    let tracker = Arc::new(Tracking {
        session: Mutex::default(),
        timeout: config.command_timeout.max(Duration::from_secs(1)),
        command_timeout: config.command_timeout,
    });
    let supervisor = Arc::new(Supervisor {
        store: Arc::downgrade(store),
        sessions: Arc::new(Sessions {
            listener,
            state: Mutex::new((0, false)),
        }),
        tracker: Arc::downgrade(&tracker),
        endpoints,
        prefix: prefix.filter(|p| !p.is_empty()).map(str::to_owned),
        client_name: client_name.to_owned(),
        connect_timeout: config.connect_timeout,
        command_timeout: config.command_timeout.max(Duration::from_secs(1)),
        closed: store.closed(),
        spawner: redis.spawner().clone(),
    });
    supervise(supervisor);
    Ok(tracker)
}

/// Runs its closure if dropped while its thread unwinds: a panicking task's last word.
struct OnPanic<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(f) = self.0.take()
        {
            f();
        }
    }
}

fn supervise(supervisor: Arc<Supervisor>) {
    let spawner = supervisor.spawner.clone();
    spawner.spawn(async move {
        let again = Arc::clone(&supervisor);
        let _restart = OnPanic(Some(move || {
            tracing::error!("the tracking task panicked; restarting it");
            again.sessions.begin();
            supervise(again);
        }));
        let mut closed = supervisor.closed.clone();
        tokio::select! {
            // The sender lives in the store: an error means the cache was dropped.
            _ = closed.changed() => {}
            () = supervisor.run() => {}
        }
    });
}

/// A session's connections, its primaries, and which slots each owns.
type Connected = (
    Vec<MultiplexedConnection>,
    Vec<(String, u16)>,
    Vec<(i64, i64, usize)>,
);

/// Why a session could not start.
enum Failure {
    /// The server has no client tracking (Redis before 6).
    Unsupported(RedisError),
    Other(String),
}

impl Supervisor {
    async fn run(&self) {
        let mut backoff = BACKOFF_MIN;
        let mut warned = false;
        loop {
            let Some(session) = self.sessions.begin() else {
                return;
            };
            let Some(mut topology) = self.store.upgrade().map(|s| s.topology()) else {
                return;
            };
            // Seen: only a change from now on ends the session, one during the connect too.
            topology.borrow_and_update();
            let lost = Arc::new(Notify::new());
            match self.connect(session, &lost).await {
                Ok((links, primaries, slots)) => {
                    if let Some(tracker) = self.tracker.upgrade() {
                        tracker.set_session(Session {
                            links: links.clone(),
                            slots,
                        });
                    }
                    self.sessions.serve(session);
                    tracing::debug!(connections = links.len(), "tracking established");
                    backoff = BACKOFF_MIN;
                    warned = false;
                    let why = self.watch(links, primaries, &lost, &mut topology).await;
                    tracing::info!(reason = %why, "tracking lost; its listener is stopped until it is back");
                }
                Err(Failure::Unsupported(e)) => {
                    if !warned {
                        if is_refused(&e) {
                            tracing::warn!(error = %e, command = refused_command(&e).unwrap_or_default(), "the redis user may not run a command tracking needs: the near cache stays off until its ACL allows it");
                        } else {
                            tracing::warn!(error = %e, "redis has no client tracking (Redis 6 or later is needed): the near cache stays off until it has");
                        }
                        warned = true;
                    }
                    tokio::time::sleep(UNSUPPORTED_RETRY).await;
                    continue;
                }
                Err(Failure::Other(e)) => {
                    tracing::debug!(error = %e, "tracking could not be established; retrying");
                }
            }
            self.sessions.lost(session);
            if let Some(tracker) = self.tracker.upgrade() {
                tracker.set_session(Session::default());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The primaries to track (their addresses, for a cluster; one unnamed entry otherwise),
    /// and which slots each owns.
    async fn primaries(&self) -> Result<(Vec<(String, u16)>, Vec<(i64, i64, usize)>), Failure> {
        if !matches!(self.endpoints, Deployment::Cluster { .. }) {
            return Ok((vec![(String::new(), 0)], Vec::new()));
        }
        let store = self
            .store
            .upgrade()
            .ok_or_else(|| Failure::Other("cache dropped".to_owned()))?;
        let owners = store
            .slot_owners()
            .await
            .map_err(|f| Failure::Other(format!("{:?}", f.into_error(self.command_timeout))))?;
        let mut primaries: Vec<(String, u16)> =
            owners.iter().map(|r| (r.host.clone(), r.port)).collect();
        primaries.sort();
        primaries.dedup();
        let slots = owners
            .iter()
            .filter_map(|r| {
                let at = primaries
                    .iter()
                    .position(|p| p.0 == r.host && p.1 == r.port)?;
                Some((r.start, r.end, at))
            })
            .collect();
        Ok((primaries, slots))
    }

    async fn connect(&self, session: u64, lost: &Arc<Notify>) -> Result<Connected, Failure> {
        let (primaries, slots) = self.primaries().await?;
        let mut links = Vec::with_capacity(primaries.len());
        for (host, port) in &primaries {
            let link = tokio::time::timeout(
                self.connect_timeout + self.command_timeout,
                self.connect_one(host, *port, session, lost),
            )
            .await
            .map_err(|_| Failure::Other("timed out".to_owned()))??;
            links.push(link);
        }
        Ok((links, primaries, slots))
    }

    async fn connect_one(
        &self,
        host: &str,
        port: u16,
        session: u64,
        lost: &Arc<Notify>,
    ) -> Result<MultiplexedConnection, Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_push_sender(pusher(
                Arc::clone(&self.sessions),
                session,
                Arc::clone(lost),
            ));
        let resp3 =
            |redis: &redis::RedisConnectionInfo| redis.clone().set_protocol(ProtocolVersion::RESP3);
        let connected = match &self.endpoints {
            Deployment::Server { dialer, server } => {
                dialer
                    .connect(&server.addr, &resp3(&server.redis), config)
                    .await
            }
            Deployment::Sentinel(primary) => primary.connect(config, ProtocolVersion::RESP3).await,
            Deployment::Cluster { dial, .. } => {
                let (dialer, redis) = dial.parts();
                dialer
                    .connect(&Addr::Tcp(host.to_owned(), port), &resp3(redis), config)
                    .await
            }
        };
        let mut link = connected.map_err(classify)?;
        let mut setname = redis::cmd("CLIENT");
        setname.arg("SETNAME").arg(&self.client_name);
        match setname.query_async::<()>(&mut link).await {
            // The name only labels the connection in `CLIENT LIST`.
            Err(e) if !is_refused(&e) => return Err(classify(e)),
            _ => {}
        }
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON").arg("BCAST");
        if let Some(prefix) = &self.prefix {
            tracking.arg("PREFIX").arg(prefix);
        }
        // Its own writes (the fills it carries) are not reported back to it.
        tracking.arg("NOLOOP");
        tracking
            .query_async::<()>(&mut link)
            .await
            .map_err(classify)?;
        if !is_primary(&mut link).await.map_err(classify)? {
            return Err(Failure::Other(format!("{host}:{port} is not a primary")));
        }
        Ok(link)
    }

    /// Watches a serving session until it fails; returns why.
    async fn watch(
        &self,
        links: Vec<MultiplexedConnection>,
        primaries: Vec<(String, u16)>,
        lost: &Notify,
        topology: &mut watch::Receiver<u64>,
    ) -> String {
        loop {
            tokio::select! {
                () = lost.notified() => return "a tracking connection closed".to_owned(),
                // The data connections are being replaced (a failover was announced): a
                // demoted primary may answer as one for seconds, so follow them now.
                _ = topology.changed() => return "the data connections were replaced".to_owned(),
                () = tokio::time::sleep(HEARTBEAT) => {}
            }
            if self.sessions.listener.strong_count() == 0 {
                return "listener dropped".to_owned();
            }
            if !self.sessions.is_serving() {
                return "tracking stopped".to_owned();
            }
            for link in &links {
                let mut link = link.clone();
                match tokio::time::timeout(self.command_timeout, is_primary(&mut link)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return "a tracked node is no longer a primary".to_owned(),
                    Ok(Err(e)) => return format!("a tracking connection failed: {e}"),
                    Err(_) => return "a tracking connection stopped answering".to_owned(),
                }
            }
            if matches!(self.endpoints, Deployment::Cluster { .. }) {
                match self.primaries().await {
                    Ok((now, _)) if now == primaries => {}
                    Ok(_) => return "the cluster's primaries changed".to_owned(),
                    // The data path sees the same failure; tracking stays until its own
                    // connections fail.
                    Err(_) => {}
                }
            }
        }
    }
}

/// Applies the invalidations a tracking connection receives, in its reader.
fn pusher(
    sessions: Arc<Sessions>,
    session: u64,
    lost: Arc<Notify>,
) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
    move |info: PushInfo| {
        let Some(listener) = sessions.listener.upgrade() else {
            return Err(());
        };
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            listener.invalidated(Some(key));
                        }
                    }
                }
                // A flush of the whole database.
                _ => listener.invalidated(None),
            },
            PushKind::Disconnection if sessions.lost(session) => lost.notify_one(),
            _ => {}
        }
        Ok(())
    }
}

/// Whether the connection's server is a primary (`ROLE`).
async fn is_primary(link: &mut MultiplexedConnection) -> Result<bool, RedisError> {
    let role: Vec<Value> = match redis::cmd("ROLE").query_async(link).await {
        Ok(role) => role,
        // A user refused ROLE: the server answered; a demotion then shows as the topology
        // changing (Sentinel's announcement) or as the connection closing.
        Err(e) if is_refused(&e) => return Ok(true),
        Err(e) => return Err(e),
    };
    Ok(match role.first() {
        Some(Value::BulkString(r)) => r == b"master",
        Some(Value::SimpleString(r)) => r == "master",
        _ => false,
    })
}

fn classify(e: RedisError) -> Failure {
    let text = e.to_string().to_ascii_lowercase();
    // No client tracking, or not for this user: retried only now and then.
    if is_refused(&e) || text.contains("unknown command") || text.contains("unknown subcommand") {
        Failure::Unsupported(e)
    } else {
        Failure::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Whether the listener was last told to start.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl TrackingListener for Flag {
        fn stop(&self) {
            self.0.store(false, Ordering::SeqCst);
        }
        fn start(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn invalidated(&self, _key: Option<&[u8]>) {}
    }

    #[test]
    fn an_older_session_can_neither_stop_nor_start_the_listener() {
        let flag = Arc::new(Flag::default());
        let listener: Weak<dyn TrackingListener> =
            Arc::downgrade(&(Arc::clone(&flag) as Arc<dyn TrackingListener>));
        let sessions = Sessions {
            listener,
            state: Mutex::new((0, false)),
        };
        let old = sessions.begin().expect("listener alive");
        let new = sessions.begin().expect("listener alive");
        sessions.serve(old);
        assert!(
            !flag.0.load(Ordering::SeqCst),
            "an old session does not start it"
        );
        sessions.serve(new);
        assert!(flag.0.load(Ordering::SeqCst) && sessions.is_serving());
        assert!(!sessions.lost(old), "an older session's loss is ignored");
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(sessions.lost(new));
        assert!(!flag.0.load(Ordering::SeqCst) && !sessions.is_serving());
        drop(flag);
        assert!(
            sessions.begin().is_none(),
            "a dropped listener ends the sessions"
        );
    }

    #[tokio::test]
    async fn a_task_that_panics_runs_its_restart_and_one_that_ends_does_not() {
        let restarted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&restarted);
        let task = tokio::spawn(async move {
            let _restart = OnPanic(Some(move || flag.store(true, Ordering::SeqCst)));
            tokio::task::yield_now().await;
            panic!("injected");
        });
        assert!(task.await.is_err_and(|e| e.is_panic()));
        assert!(restarted.load(Ordering::SeqCst));

        let quiet = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&quiet);
        tokio::spawn(async move {
            let _restart = OnPanic(Some(move || flag.store(true, Ordering::SeqCst)));
            tokio::task::yield_now().await;
        })
        .await
        .expect("ends");
        assert!(!quiet.load(Ordering::SeqCst));
    }
}
