//! Queue test support: a connection-layer [`Redis`] on a private server or the shared
//! cluster ([`QueueRedis`], and [`queue_suite!`](crate::queue_suite) to run one test body on
//! both), and worker child processes ([`WorkerProcess`]) that tests kill for real.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use cached_runtime::{Redis, RedisBuilder};

use crate::{
    GENEROUS_TIMEOUT, RedisServer, Signal,
    topology::{AnyConnection, LocalCluster, TestRedis, Topology},
};

/// One test's Redis for queues: a private server, or the shared cluster held by this test
/// alone (flushed first).
#[derive(Debug)]
pub struct QueueRedis {
    server: Option<RedisServer>,
    shared: Option<TestRedis>,
}

impl QueueRedis {
    /// A fresh Redis of `topology` (standalone or cluster).
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Standalone => Self {
                server: Some(RedisServer::start()),
                shared: None,
            },
            Topology::Cluster => Self {
                server: None,
                shared: Some(TestRedis::start(Topology::Cluster)),
            },
            Topology::Sentinel => panic!("the queue tests run on a server or the cluster"),
        }
    }

    /// Whether this is the cluster.
    pub fn is_cluster(&self) -> bool {
        self.server.is_none()
    }

    /// The private server (none on the cluster).
    pub fn server(&self) -> Option<&RedisServer> {
        self.server.as_ref()
    }

    /// A builder with the harness's generous timeouts.
    pub fn builder(&self) -> RedisBuilder {
        let builder = match &self.server {
            Some(server) => Redis::builder(server.url()),
            None => Redis::cluster(LocalCluster::shared().seeds()),
        };
        builder
            .command_timeout(GENEROUS_TIMEOUT)
            .connect_timeout(GENEROUS_TIMEOUT)
    }

    /// A connected [`Redis`] built from [`builder`](Self::builder).
    pub async fn redis(&self) -> Redis {
        self.builder()
            .build()
            .await
            .expect("connect to the test redis")
    }

    /// The arguments that point a [`WorkerProcess`] at this Redis.
    pub fn worker_args(&self) -> Vec<String> {
        match &self.server {
            Some(server) => vec!["--redis".to_owned(), server.url()],
            None => vec![
                "--cluster".to_owned(),
                LocalCluster::shared().seeds().join(","),
            ],
        }
    }

    /// A synchronous connection that reaches every key.
    pub fn conn(&self) -> AnyConnection {
        match (&self.server, &self.shared) {
            (Some(server), _) => AnyConnection::Single(server.conn()),
            (None, Some(shared)) => shared.conn(),
            (None, None) => unreachable!("a QueueRedis has a server or the cluster"),
        }
    }

    /// Every key matching `pattern`, from every primary, sorted (test inspection only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match (&self.server, &self.shared) {
            (Some(server), _) => {
                let mut keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut server.conn())
                    .expect("KEYS (test inspection only)");
                keys.sort();
                keys
            }
            (None, Some(shared)) => shared.keys(pattern),
            (None, None) => unreachable!("a QueueRedis has a server or the cluster"),
        }
    }
}

/// Runs each listed `async fn(QueueRedis)` as one `#[tokio::test]` (multi-threaded) per
/// topology, in modules named after them: `queue_suite!(standalone, cluster; a, b)`.
#[macro_export]
macro_rules! queue_suite {
    (@each [$($test:ident),+] $topology:ident $($rest:ident)*) => {
        $crate::queue_suite!(@module $topology; $($test),+);
        $crate::queue_suite!(@each [$($test),+] $($rest)*);
    };
    (@each [$($test:ident),+]) => {};
    (@module standalone; $($test:ident),+) => {
        $crate::queue_suite!(@tests standalone, Standalone; $($test),+);
    };
    (@module cluster; $($test:ident),+) => {
        $crate::queue_suite!(@tests cluster, Cluster; $($test),+);
    };
    ($($topology:ident),+ ; $($test:ident),+ $(,)?) => {
        $crate::queue_suite!(@each [$($test),+] $($topology)+);
    };
    (@tests $module:ident, $variant:ident; $($test:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::queue::QueueRedis::start(
                        $crate::topology::Topology::$variant,
                    ))
                    .await
                }
            )+
        }
    };
}

/// A `queue_worker` child process (`tests/src/bin/queue_worker.rs`), killed on drop. Its
/// stdout lines arrive on a channel; `finish` lines on its stdin release stalled handlers.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl WorkerProcess {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_queue_worker")`) with `args`.
    pub fn spawn(binary: &str, args: &[String]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a stdout line that starts with `prefix`; returns it. Lines before
    /// it are dropped.
    #[track_caller]
    pub fn expect_line(&self, prefix: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "no line starting with {prefix:?} from the worker within {within:?}: {e}"
                ),
            }
        }
    }

    /// Writes `line` to its stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the worker's stdin");
        writeln!(stdin, "{line}").expect("write to the worker's stdin");
        stdin.flush().expect("flush the worker's stdin");
    }

    /// Sends `sig` (`SIGSTOP` to stall it, `SIGCONT` to resume).
    pub fn signal(&self, sig: Signal) {
        crate::signal(self.pid(), sig).unwrap_or_else(|e| panic!("{sig} to the worker: {e}"));
    }

    /// `SIGKILL`, and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = crate::signal(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
