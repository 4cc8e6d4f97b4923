//! A connection of one caller's own, for blocking commands (`BLPOP`, `BZPOPMIN`, `XREAD
//! BLOCK` …): on the shared connections a command that waits on the server would hold up
//! every other caller's commands behind it, and the command timeout would cut it short.

use std::{fmt, time::Duration};

use redis::{Cmd, FromRedisValue};

use super::{
    Redis,
    connector::{Connector, Manager},
    link::{Fault, Link},
};
use crate::error::CacheError;

/// A connection used by one caller alone, made with its [`Redis`]'s settings and topology,
/// for commands that wait on the server ([`Redis::blocking`]).
///
/// Each command may block on the server for up to `max_block` (the timeout it passes to
/// Redis); the connection waits that long plus the command timeout for the answer. It
/// connects on first use, and after a command failed with a broken connection or no answer
/// it connects again on the next one: a wait cut short leaves nothing pending behind it.
/// Not subject to the circuit breaker, and not timed in `db.client.operation.duration`
/// (a blocking command's duration is how long nothing happened).
pub struct BlockingConnection {
    redis: Redis,
    max_block: Duration,
    manager: Option<Manager>,
    conn: Option<Link>,
}

impl fmt::Debug for BlockingConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingConnection")
            .field("redis", &self.redis.describe())
            .field("max_block", &self.max_block)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Redis {
    /// A connection of its own for blocking commands that wait on the server for up to
    /// `max_block`; see [`BlockingConnection`]. On a cluster it routes each command by its
    /// key, as the shared connections do.
    pub fn blocking(&self, max_block: Duration) -> BlockingConnection {
        BlockingConnection {
            redis: self.clone(),
            max_block,
            manager: None,
            conn: None,
        }
    }
}

impl BlockingConnection {
    /// How long the server may block one command: the answer is awaited this long plus the
    /// command timeout.
    pub fn max_block(&self) -> Duration {
        self.max_block
    }

    /// Whether a connection is open now (none before the first command, nor after one broke).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Runs `cmd`, connecting first when needed. The caller keeps the server-side timeout it
    /// puts in `cmd` within [`max_block`](Self::max_block).
    ///
    /// ```no_run
    /// # async fn f(redis: cached_runtime::connection::Redis) -> Result<(), cached_runtime::CacheError> {
    /// use std::time::Duration;
    /// use cached_runtime::connection::cmd;
    /// let mut conn = redis.blocking(Duration::from_secs(5));
    /// let popped: Option<(String, String)> = conn.query(cmd("BLPOP").arg("jobs").arg(5)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, CacheError> {
        let wait = self.wait();
        let command_timeout = self.redis.command_timeout();
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = tokio::time::timeout(wait, self.connect())
                    .await
                    .map_err(|_| CacheError::Timeout(wait))??;
                self.conn.insert(conn)
            }
        };
        let result = match tokio::time::timeout(wait, cmd.query_async::<T>(conn)).await {
            Ok(result) => result,
            Err(_) => {
                // The answer may still come: a new connection, not this one, takes the next.
                self.conn = None;
                return Err(CacheError::Timeout(wait));
            }
        };
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                let fault = if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout() {
                    self.conn = None;
                    Fault::Broken {
                        event: false,
                        error: e,
                    }
                } else {
                    Fault::Command(e)
                };
                Err(fault.into_error(command_timeout))
            }
        }
    }

    /// Closes the connection now (the next command opens another).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// How long one command may take: the server-side block and a command's own time.
    fn wait(&self) -> Duration {
        self.max_block + self.redis.command_timeout()
    }

    async fn connect(&mut self) -> Result<Link, CacheError> {
        if self.manager.is_none() {
            // The same topology and settings as the shared connections, but answers awaited
            // for as long as a command may block.
            let mut config = self.redis.config().clone();
            config.command_timeout = self.wait();
            let connector = Connector::new(&config, self.redis.describe())?;
            self.manager = Some(Manager {
                connector,
                response_timeout: self.wait(),
                topology: self.redis.pool().topology(),
            });
        }
        let Some(manager) = &self.manager else {
            return Err(CacheError::Unavailable);
        };
        match bb8::ManageConnection::connect(manager).await {
            Ok(conn) => Ok(conn.conn),
            Err(e) => Err(CacheError::Connect {
                url: self.redis.describe().to_owned(),
                hint: "is redis running and reachable at this address?",
                source: Box::new(e),
            }),
        }
    }
}
