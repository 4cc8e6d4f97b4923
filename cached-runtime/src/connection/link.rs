//! A connection as the layers above use it ([`Link`]: one server, or a whole cluster) and how
//! a command on it can fail ([`Fault`]).

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};

use super::dial::ClusterConnection;

use crate::error::CacheError;

/// A command that did not succeed, as the layers above need to know it.
#[derive(Debug)]
pub(crate) enum Fault {
    /// No answer within the command timeout. `event`: the first timeout of its connection
    /// since its last success.
    Timeout { event: bool },
    /// The connection is unusable and was retired. `event`: this caller retired it.
    Broken { event: bool, error: RedisError },
    /// No connection yet: one is being made.
    NoConnection,
    /// Redis answered with an error; the connection is fine.
    Command(RedisError),
}

impl Fault {
    pub(crate) fn into_error(self, command_timeout: Duration) -> CacheError {
        match self {
            Fault::Timeout { .. } => CacheError::Timeout(command_timeout),
            Fault::NoConnection => CacheError::Unavailable,
            Fault::Broken { error, .. } | Fault::Command(error) => match error.code() {
                Some(code) => CacheError::Command {
                    code: Some(code.to_owned()),
                    source: Box::new(error),
                },
                None if error.kind() == redis::ErrorKind::Io => {
                    CacheError::Connection(Box::new(error))
                }
                None => CacheError::Command {
                    code: None,
                    source: Box::new(error),
                },
            },
        }
    }
}

/// One shared, multiplexed connection: to a server, or to a whole cluster.
#[derive(Clone)]
pub(crate) enum Link {
    Single(MultiplexedConnection),
    /// Routes each command to the shard that owns its key; follows `MOVED` and `ASK`.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    #[inline]
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}
