//! A Redis for tests of primitives that run on the connection layer (rate limits, counters):
//! a private server, or the binary's shared cluster held for one test, with a fresh
//! [`Redis`] connection per simulated process.

use std::time::Duration;

use cached_runtime::{Redis, RedisBuilder};

use crate::{
    GENEROUS_TIMEOUT, RedisServer,
    topology::{AnyConnection, LocalCluster, TestRedis, Topology, command_calls},
};

/// One test's Redis.
#[derive(Debug)]
pub enum Deployment {
    /// A private server: can be frozen and killed.
    Standalone(RedisServer),
    /// The shared cluster, flushed and held by this test.
    Cluster(TestRedis),
}

impl Deployment {
    /// A fresh deployment of `topology` (standalone or cluster).
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Standalone => Self::Standalone(RedisServer::start()),
            Topology::Cluster => Self::Cluster(TestRedis::start(Topology::Cluster)),
            Topology::Sentinel => panic!("Deployment covers standalone and cluster"),
        }
    }

    /// A builder for a connection with the harness's generous timeouts.
    pub fn builder(&self) -> RedisBuilder {
        let builder = match self {
            Self::Standalone(server) => Redis::builder(server.url()),
            Self::Cluster(_) => Redis::cluster(LocalCluster::shared().seeds()),
        };
        builder
            .command_timeout(GENEROUS_TIMEOUT)
            .connect_timeout(GENEROUS_TIMEOUT)
    }

    /// A new connection, standing for one process.
    pub async fn redis(&self) -> Redis {
        self.builder()
            .build()
            .await
            .expect("connect to the test redis")
    }

    /// A connection whose commands time out after `timeout`, for tests that freeze the server.
    pub async fn redis_with_timeout(&self, timeout: Duration) -> Redis {
        self.builder()
            .command_timeout(timeout)
            .build()
            .await
            .expect("connect to the test redis")
    }

    /// The private server, for freezing and killing it.
    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            Self::Standalone(server) => server,
            Self::Cluster(_) => panic!("the shared cluster is not a private server"),
        }
    }

    /// A synchronous connection that reaches every key.
    pub fn conn(&self) -> AnyConnection {
        match self {
            Self::Standalone(server) => AnyConnection::Single(server.conn()),
            Self::Cluster(redis) => redis.conn(),
        }
    }

    /// Runs `cmd` on every primary (`SCRIPT FLUSH`, `INFO`), returning each answer.
    pub fn on_every_primary<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Vec<T> {
        match self {
            Self::Standalone(server) => vec![cmd.query(&mut server.conn()).expect("command")],
            Self::Cluster(redis) => redis.on_every_primary(cmd),
        }
    }

    /// How many times `command` ran, summed over every primary (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        command_calls(
            &self.on_every_primary(redis::cmd("INFO").arg("commandstats")),
            command,
        )
    }
}

/// Runs each `async fn name(deployment: Deployment)` against a private server and the shared
/// cluster: `deployment_suite!(standalone, cluster; name, …)`.
#[macro_export]
macro_rules! deployment_suite {
    (@each [$($test:ident),+] $topology:ident $($rest:ident)*) => {
        $crate::deployment_suite!(@module $topology; $($test),+);
        $crate::deployment_suite!(@each [$($test),+] $($rest)*);
    };
    (@each [$($test:ident),+]) => {};
    (@module standalone; $($test:ident),+) => {
        $crate::deployment_suite!(@tests standalone, Standalone; $($test),+);
    };
    (@module cluster; $($test:ident),+) => {
        $crate::deployment_suite!(@tests cluster, Cluster; $($test),+);
    };
    ($($topology:ident),+ ; $($test:ident),+ $(,)?) => {
        $crate::deployment_suite!(@each [$($test),+] $($topology)+);
    };
    (@tests $module:ident, $variant:ident; $($test:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::deployment::Deployment::start(
                        $crate::topology::Topology::$variant,
                    ))
                    .await
                }
            )+
        }
    };
}
