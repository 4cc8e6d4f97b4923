//! Redis deployments for tests: a local Redis Cluster (3 primaries, 3 replicas), a Sentinel
//! setup (primary, replica, 3 sentinels), and [`TestRedis`], through which one test body runs
//! against a single server, the cluster or Sentinel ([`topology_suite!`](crate::topology_suite)).
//!
//! Every server runs on free loopback ports. A cluster or Sentinel setup of one test is torn
//! down on drop; the ones shared by a test binary ([`LocalCluster::shared`],
//! [`LocalSentinel::shared`]) are started once and killed when the binary exits, and the tests
//! using them take turns ([`TestRedis`] holds a lock and flushes the data first).

use std::{
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use cached_runtime::{Cache, CacheBuilder};
use redis::{ConnectionLike, RedisResult, Value};

use crate::{GENEROUS_TIMEOUT, RedisServer, free_port, kill_at_exit};

/// The name the sentinels know the primary by.
pub const MASTER_NAME: &str = "mymaster";

/// How long a new cluster or Sentinel setup may take to agree on its topology.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// A Redis Cluster of three primaries, each with one replica, on loopback.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<RedisServer>,
}

impl LocalCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`,
    /// and waits until every node reports `cluster_state:ok` and every replica is in sync.
    ///
    /// `cluster-node-timeout` is 1 s, so a killed primary's replica takes over within a few.
    pub fn start() -> Self {
        Self::start_with(|_| Vec::new())
    }

    /// [`start`](Self::start) with extra `redis-server` arguments for node `i` (a TLS port).
    pub fn start_with(extra: impl Fn(usize) -> Vec<String>) -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|i| {
                let bus = free_port().to_string();
                let extra = extra(i);
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "{dir}/nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus,
                    // A replica may always take over, however long its link was down.
                    "--cluster-replica-validity-factor",
                    "0",
                ];
                args.extend(extra.iter().map(String::as_str));
                RedisServer::start_with_args(&args)
            })
            .collect();
        let output = Command::new(redis_cli())
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (run scripts/ensure-redis.sh): {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_settled();
        cluster
    }

    /// The cluster shared by every test of this binary, started on first use.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<LocalCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Self::start();
            kill_at_exit(&cluster.nodes);
            cluster
        })
    }

    /// Waits until every live node says `cluster_state:ok`, knows the same primaries for
    /// every slot, and every replica's link to its primary is up.
    pub fn wait_until_settled(&self) {
        settle("the local cluster", || self.settled());
    }

    fn settled(&self) -> Result<(), String> {
        let mut maps = Vec::new();
        for node in self.nodes.iter().filter(|n| n.pid() != 0) {
            let mut conn = node.try_conn().map_err(|e| e.to_string())?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {} is not ok yet", node.port()));
            }
            let role: Vec<Value> = redis::cmd("ROLE")
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            if matches!(role.first(), Some(Value::BulkString(r)) if r == b"slave") {
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .map_err(|e| e.to_string())?;
                if !replication.contains("master_link_status:up") {
                    return Err(format!("replica {} is not in sync yet", node.port()));
                }
            }
            maps.push(slot_map(&mut conn).map_err(|e| e.to_string())?);
        }
        if maps.windows(2).any(|w| w[0] != w[1]) {
            return Err("the nodes disagree on who owns which slots".to_owned());
        }
        if maps.first().is_none_or(|m| m.len() < 3) {
            return Err("fewer than three primaries own slots".to_owned());
        }
        Ok(())
    }

    /// The URLs of every node, as seeds for a cluster client.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A cluster cache builder with the harness's generous timeouts.
    pub fn cache_builder(&self) -> CacheBuilder {
        Cache::cluster(self.seeds())
            .command_timeout(GENEROUS_TIMEOUT)
            .connect_timeout(GENEROUS_TIMEOUT)
    }

    /// A synchronous cluster connection (routing by key), for checking what the cache wrote.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClientBuilder::new(self.live_seeds())
            .connection_timeout(GENEROUS_TIMEOUT)
            .response_timeout(GENEROUS_TIMEOUT)
            .build()
            .and_then(|c| c.get_connection())
            .expect("connect to the local cluster")
    }

    fn live_seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.pid() != 0)
            .map(RedisServer::url)
            .collect()
    }

    /// The node that owns `key`'s slot now, as an index for [`node`](Self::node).
    pub fn primary_for(&self, key: &str) -> usize {
        let node = self
            .nodes
            .iter()
            .find(|n| n.pid() != 0)
            .expect("a live node");
        let mut conn = node.conn();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        let port = slot_map(&mut conn)
            .expect("CLUSTER SLOTS")
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("an owner for every slot");
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("the owner is one of ours")
    }

    /// The ports of the primaries that own slots now.
    pub fn primary_ports(&self) -> Vec<u16> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.pid() != 0)
            .expect("a live node");
        let mut ports: Vec<u16> = slot_map(&mut node.conn())
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|(_, _, port)| port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The node listening on `port`.
    pub fn node_on(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("one of our nodes")
    }

    /// How many keys the node on `port` holds.
    pub fn dbsize(&self, port: u16) -> u64 {
        redis::cmd("DBSIZE")
            .query(&mut self.node_on(port).conn())
            .expect("DBSIZE")
    }

    /// Node `index` (of six).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// Kills node `index` (`SIGKILL`).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Deletes every key on every primary.
    pub fn flush(&self) {
        for port in self.primary_ports() {
            let node = self
                .nodes
                .iter()
                .find(|n| n.port() == port)
                .expect("a known primary");
            let _: () = redis::cmd("FLUSHALL")
                .query(&mut node.conn())
                .expect("FLUSHALL");
        }
    }
}

/// `CLUSTER SLOTS` as (first slot, last slot, primary's port), sorted.
fn slot_map(conn: &mut redis::Connection) -> RedisResult<Vec<(i64, i64, u16)>> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query(conn)?;
    let mut map = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        if let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
            && let Some(Value::Int(port)) = primary.get(1)
        {
            map.push((*start, *end, u16::try_from(*port).unwrap_or(0)));
        }
    }
    map.sort_unstable();
    Ok(map)
}

/// A primary, its replica and three sentinels watching them, on loopback.
#[derive(Debug)]
pub struct LocalSentinel {
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl LocalSentinel {
    /// Starts the primary and its replica, then three sentinels (quorum 2, a node is down
    /// after 1 s of silence), and waits until each sentinel sees the replica and the other
    /// two sentinels, so that a failover can happen.
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &primary.port().to_string(),
        ]);
        let conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            primary.port()
        );
        let sentinels = (0..3).map(|_| RedisServer::start_sentinel(&conf)).collect();
        let setup = Self {
            servers: vec![primary, replica],
            sentinels,
        };
        setup.wait_until_settled();
        setup
    }

    /// The Sentinel setup shared by every test of this binary, started on first use.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<LocalSentinel> = OnceLock::new();
        SHARED.get_or_init(|| {
            let setup = Self::start();
            kill_at_exit(&setup.servers);
            kill_at_exit(&setup.sentinels);
            setup
        })
    }

    /// Waits until every sentinel names a live primary, sees a replica of it in sync and
    /// knows the other two sentinels.
    pub fn wait_until_settled(&self) {
        settle("the local sentinels", || self.settled());
    }

    fn settled(&self) -> Result<(), String> {
        let primary = self.primary_port();
        let live: Vec<u16> = self
            .servers
            .iter()
            .filter(|s| s.pid() != 0)
            .map(RedisServer::port)
            .collect();
        if !live.contains(&primary) {
            return Err(format!("the sentinels still name {primary}, which is down"));
        }
        for sentinel in &self.sentinels {
            let mut conn = sentinel.try_conn().map_err(|e| e.to_string())?;
            let replicas: Vec<Value> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            let healthy = replicas.iter().any(|r| {
                let text = format!("{r:?}");
                !text.contains("s_down") && !text.contains("disconnected")
            });
            if !healthy {
                return Err(format!(
                    "sentinel {} sees no healthy replica",
                    sentinel.port()
                ));
            }
            let others: Vec<Value> = redis::cmd("SENTINEL")
                .arg("SENTINELS")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            if others.len() < 2 {
                return Err(format!(
                    "sentinel {} knows {} other sentinels",
                    sentinel.port(),
                    others.len()
                ));
            }
        }
        let mut conn = self
            .server_on(primary)
            .ok_or("no primary")?
            .try_conn()
            .map_err(|e| e.to_string())?;
        let replication: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        if !replication.contains("connected_slaves:1") {
            return Err("the replica is not attached yet".to_owned());
        }
        Ok(())
    }

    fn server_on(&self, port: u16) -> Option<&RedisServer> {
        self.servers.iter().find(|s| s.port() == port)
    }

    /// The port of the primary the first live sentinel names now.
    pub fn primary_port(&self) -> u16 {
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.pid() != 0)
            .expect("a live sentinel");
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut sentinel.conn())
            .expect("SENTINEL GET-MASTER-ADDR-BY-NAME");
        port
    }

    /// The sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// A Sentinel cache builder with the harness's generous timeouts.
    pub fn cache_builder(&self) -> CacheBuilder {
        Cache::sentinel(MASTER_NAME, self.sentinel_urls())
            .command_timeout(GENEROUS_TIMEOUT)
            .connect_timeout(GENEROUS_TIMEOUT)
    }

    /// A connection to the first live sentinel.
    pub fn sentinel_conn(&self) -> redis::Connection {
        self.sentinels
            .iter()
            .find(|s| s.pid() != 0)
            .expect("a live sentinel")
            .conn()
    }

    /// A connection to the data node on `port`.
    pub fn conn_to(&self, port: u16) -> redis::Connection {
        self.server_on(port).expect("one of our nodes").conn()
    }

    /// A connection to the current primary.
    pub fn conn(&self) -> redis::Connection {
        self.server_on(self.primary_port())
            .expect("the primary is one of ours")
            .conn()
    }

    /// Kills the current primary (`SIGKILL`); returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .expect("the primary is one of ours")
            .kill();
        port
    }

    /// Deletes every key (the replica follows).
    pub fn flush(&self) {
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut self.conn())
            .expect("FLUSHALL");
    }
}

/// Polls `settled` until it holds; panics with its last reason after [`SETTLE_WITHIN`].
fn settle(what: &str, settled: impl Fn() -> Result<(), String>) {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        match settled() {
            Ok(()) => return,
            Err(why) => assert!(
                Instant::now() < deadline,
                "{what} did not settle within {SETTLE_WITHIN:?}: {why}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keys_on(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query(conn)
        .expect("KEYS (test inspection only)")
}

fn redis_cli() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// Where a parameterised test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// A private `redis-server`.
    Standalone,
    /// The binary's shared [`LocalCluster`].
    Cluster,
    /// The binary's shared [`LocalSentinel`].
    Sentinel,
}

/// One test's Redis: a private server, or the shared cluster or Sentinel setup, flushed and
/// held by this test alone until it is dropped.
#[derive(Debug)]
pub struct TestRedis {
    topology: Topology,
    server: Option<RedisServer>,
    _turn: Option<MutexGuard<'static, ()>>,
}

impl TestRedis {
    /// A fresh Redis of `topology` for one test.
    pub fn start(topology: Topology) -> Self {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = || Some(TURN.lock().unwrap_or_else(PoisonError::into_inner));
        match topology {
            Topology::Standalone => Self {
                topology,
                server: Some(RedisServer::start()),
                _turn: None,
            },
            Topology::Cluster => {
                let cluster = LocalCluster::shared();
                let turn = turn();
                cluster.flush();
                Self {
                    topology,
                    server: None,
                    _turn: turn,
                }
            }
            Topology::Sentinel => {
                let setup = LocalSentinel::shared();
                let turn = turn();
                setup.flush();
                Self {
                    topology,
                    server: None,
                    _turn: turn,
                }
            }
        }
    }

    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// A cache builder for this Redis with generous timeouts.
    pub fn cache_builder(&self) -> CacheBuilder {
        match (&self.server, self.topology) {
            (Some(server), _) => server.cache_builder(),
            (None, Topology::Cluster) => LocalCluster::shared().cache_builder(),
            (None, _) => LocalSentinel::shared().cache_builder(),
        }
    }

    /// A cache on this Redis, built from [`cache_builder`](Self::cache_builder) as it is.
    pub async fn cache(&self) -> Cache {
        self.cache_builder()
            .build()
            .await
            .expect("connect to the test redis")
    }

    /// Every key matching `pattern`, from every primary, sorted (`KEYS`: for test inspection
    /// only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = match (&self.server, self.topology) {
            (Some(server), _) => keys_on(&mut server.conn(), pattern),
            (None, Topology::Cluster) => {
                let cluster = LocalCluster::shared();
                cluster
                    .primary_ports()
                    .into_iter()
                    .flat_map(|port| keys_on(&mut cluster.node_on(port).conn(), pattern))
                    .collect()
            }
            (None, _) => keys_on(&mut LocalSentinel::shared().conn(), pattern),
        };
        keys.sort();
        keys
    }

    /// Sets every key in `keys` to `value`, pipelined (per node on the cluster).
    pub fn set_all(&self, keys: &[String], value: &str) {
        let mut conn = self.conn();
        for chunk in keys.chunks(5000) {
            match &mut conn {
                AnyConnection::Single(c) => {
                    let mut pipe = redis::pipe();
                    for key in chunk {
                        pipe.set(key, value).ignore();
                    }
                    let _: () = pipe.query(c).expect("SET in a pipeline");
                }
                AnyConnection::Cluster(c) => {
                    let mut pipe = redis::cluster::cluster_pipe();
                    for key in chunk {
                        pipe.set(key, value).ignore();
                    }
                    let _: () = pipe.query(c).expect("SET in a cluster pipeline");
                }
            }
        }
    }

    /// Runs `cmd` on every primary (`SCRIPT FLUSH`, `INFO`), returning each answer.
    pub fn on_every_primary<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Vec<T> {
        match (&self.server, self.topology) {
            (None, Topology::Cluster) => {
                let cluster = LocalCluster::shared();
                cluster
                    .primary_ports()
                    .into_iter()
                    .map(|port| {
                        cmd.query(&mut cluster.node_on(port).conn())
                            .expect("command on a primary")
                    })
                    .collect()
            }
            _ => vec![cmd.query(&mut self.conn()).expect("command")],
        }
    }

    /// How many times `command` ran, summed over every primary (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        command_calls(
            &self.on_every_primary(redis::cmd("INFO").arg("commandstats")),
            command,
        )
    }

    /// A synchronous connection that reaches every key (routed by key on the cluster).
    pub fn conn(&self) -> AnyConnection {
        match (&self.server, self.topology) {
            (Some(server), _) => AnyConnection::Single(server.conn()),
            (None, Topology::Cluster) => {
                AnyConnection::Cluster(Box::new(LocalCluster::shared().conn()))
            }
            (None, _) => AnyConnection::Single(LocalSentinel::shared().conn()),
        }
    }
}

/// How many times `command` ran, summed over `INFO commandstats` answers.
pub fn command_calls(infos: &[String], command: &str) -> u64 {
    let field = format!("cmdstat_{}:calls=", command.to_lowercase());
    infos
        .iter()
        .map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix(&field))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// A synchronous connection to one server or to a cluster.
pub enum AnyConnection {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl std::fmt::Debug for AnyConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "AnyConnection::Single",
            Self::Cluster(_) => "AnyConnection::Cluster",
        })
    }
}

impl ConnectionLike for AnyConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_command(cmd),
            Self::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Self::Single(c) => c.supports_pipelining(),
            Self::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Single(c) => c.check_connection(),
            Self::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(c) => c.is_open(),
            Self::Cluster(c) => c.is_open(),
        }
    }
}

/// Runs each listed `async fn(TestRedis)` as one `#[tokio::test]` per topology, in modules
/// named after them: `topology_suite!(standalone, cluster; a_hit_…, a_miss_…)` makes
/// `standalone::a_hit_…` and `cluster::a_hit_…`.
#[macro_export]
macro_rules! topology_suite {
    (@each [$($test:ident),+] $topology:ident $($rest:ident)*) => {
        $crate::topology_suite!(@module $topology; $($test),+);
        $crate::topology_suite!(@each [$($test),+] $($rest)*);
    };
    (@each [$($test:ident),+]) => {};
    (@module standalone; $($test:ident),+) => {
        $crate::topology_suite!(@tests standalone, Standalone; $($test),+);
    };
    (@module cluster; $($test:ident),+) => {
        $crate::topology_suite!(@tests cluster, Cluster; $($test),+);
    };
    (@module sentinel; $($test:ident),+) => {
        $crate::topology_suite!(@tests sentinel, Sentinel; $($test),+);
    };
    ($($topology:ident),+ ; $($test:ident),+ $(,)?) => {
        $crate::topology_suite!(@each [$($test),+] $($topology)+);
    };
    (@tests $module:ident, $variant:ident; $($test:ident),+) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::topology::TestRedis::start(
                        $crate::topology::Topology::$variant,
                    ))
                    .await
                }
            )+
        }
    };
}
