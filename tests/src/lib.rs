//! Test support: a private `redis-server` per test, on a free loopback port, killed on drop;
//! signals without `/bin/kill`; polling instead of sleeping; a fault-injecting TCP [`proxy`].

use std::{
    io,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use cached_runtime::{Cache, CacheBuilder};
pub use nix::sys::signal::Signal;

pub mod cutter;
pub mod deployment;
pub mod fixtures;
pub mod logs;
pub mod proxy;
pub mod queue;
pub mod recorder;
pub mod sessions;
pub mod tls;
pub mod topology;
pub use proxy::{Proxy, Traffic};

/// Command and connect timeout of the caches the harness builds: generous, because a loaded
/// 2-core CI machine can take far longer than a production timeout to answer. Tests about
/// timeouts set their own through [`RedisServer::cache_builder`].
pub const GENEROUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a starting server may take to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How many fresh ports [`RedisServer::start`] tries when the server cannot bind one.
const START_ATTEMPTS: usize = 5;

/// A `redis-server` child process, killed (and its directory removed) on drop, panics included.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
}

/// Why one attempt to start a server failed: the child exited before it answered, most often
/// because its port was taken.
struct Exited {
    status: ExitStatus,
    /// The end of the server's log, as a suffix for a message.
    log: String,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    ///
    /// When the port turns out to be taken (another process bound it between the free-port
    /// probe and the server's bind), starts again on another port, a few times.
    /// Panics with one line saying how to install `redis-server` when it is missing.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments (see
    /// [`start_with`](Self::start_with) for `{dir}`).
    pub fn start_with_args(extra: &[&str]) -> Self {
        Self::start_mode(None, extra)
    }

    /// A sentinel (`redis-server <conf> --sentinel`) on a free port; `conf` is its
    /// configuration file's text, written to its scratch directory (sentinels rewrite it).
    pub fn start_sentinel(conf: &str) -> Self {
        Self::start_mode(Some(conf), &[])
    }

    fn start_mode(sentinel: Option<&str>, extra: &[&str]) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match Self::try_start(port, sentinel, extra) {
                Ok(server) => return server,
                Err(Exited { status, log }) => {
                    failures.push(format!("port {port}: exited with {status}{log}"));
                }
            }
        }
        panic!(
            "redis-server did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        )
    }

    /// Starts a server on `port` (for restarting one on the same address).
    ///
    /// Panics with the server's exit status (and the end of its log) when it cannot bind
    /// `port`, e.g. because another server holds it.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts a server on `port` with extra `redis-server` arguments, e.g.
    /// `["--requirepass", "pw"]`; `{dir}` in an argument stands for the server's scratch
    /// directory (e.g. `--unixsocket {dir}/redis.sock`).
    ///
    /// Panics like [`start_on`](Self::start_on) when the server exits before it answers.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        match Self::try_start(port, None, extra) {
            Ok(server) => server,
            Err(Exited { status, log }) => panic!(
                "redis-server on port {port} exited with {status} before it answered PING \
                 (is the port taken?){log}"
            ),
        }
    }

    fn try_start(port: u16, sentinel: Option<&str>, extra: &[&str]) -> Result<Self, Exited> {
        // Unique per start, not per port: a second server tried on a taken port must not share
        // (and on drop remove) the directory of the one that holds it.
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "cached-test-redis-{}-{port}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the server's temp dir");
        let mut command = Command::new(redis_server_binary());
        if let Some(conf) = sentinel {
            let path = dir.join("sentinel.conf");
            std::fs::write(&path, conf).expect("write the sentinel's config");
            command.arg(path).arg("--sentinel");
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir".as_ref(), dir.as_os_str()])
            // The log explains a failed start; an `extra` `--logfile` still wins (it comes later).
            .args(["--logfile".as_ref(), dir.join("redis.log").as_os_str()])
            .args(
                extra
                    .iter()
                    .map(|a| a.replace("{dir}", &dir.to_string_lossy())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "redis-server not found: run scripts/ensure-redis.sh (or apt-get install redis-server), or set REDIS_SERVER_BIN"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| (*p).to_owned());
        let mut server = Self {
            child: Some(child),
            port,
            dir,
            password,
        };
        match server.wait_until_ready() {
            Ok(()) => Ok(server),
            Err(status) => {
                let log = log_tail(&server.dir.join("redis.log"));
                Err(Exited { status, log })
            }
        }
    }

    /// Waits until this server, and not another process on the same port, answers; returns
    /// the child's exit status when it exits first.
    fn wait_until_ready(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + READY_WITHIN;
        let url = match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        let client = redis::Client::open(url).expect("a valid url");
        let pid = self.pid();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(status);
            }
            let last = match client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c))
            {
                Ok(info) => match info_field(&info, "process_id") {
                    Some(answered) if answered == pid.to_string() => return Ok(()),
                    answered => format!(
                        "process {} answers on the port, not ours",
                        answered.unwrap_or("(unknown)")
                    ),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "redis-server (pid {pid}) on port {} did not answer within {READY_WITHIN:?}: {last}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:{port}`, e.g. as a [`Proxy`]'s upstream.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A synchronous client connection, for checking what the cache wrote.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to the test redis-server")
    }

    /// [`conn`](Self::conn), or why it failed.
    pub fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(GENEROUS_TIMEOUT)
    }

    /// A builder for a cache on this server with generous command and connect timeouts
    /// ([`GENEROUS_TIMEOUT`]), for tests that change other settings.
    pub fn cache_builder(&self) -> CacheBuilder {
        cache_builder(self.url())
    }

    /// A cache on this server with test-friendly settings: [`cache_builder`](Self::cache_builder)
    /// as it is.
    pub async fn cache(&self) -> Cache {
        self.cache_builder()
            .build()
            .await
            .expect("connect to the test redis-server")
    }

    /// The server's scratch directory (for a unix socket, say).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, for sending signals (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops the server (`SIGSTOP`): it keeps its connections and accepts new ones at the TCP
    /// level, but answers nothing until [`thaw`](Self::thaw). Returns once the process is
    /// stopped. Drop thaws it before killing it.
    pub fn freeze(&self) {
        let pid = self.live_pid("freeze");
        signal(pid, Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP {pid}: {e}"));
        wait_for_state(pid, true);
    }

    /// Resumes a frozen server (`SIGCONT`); returns once the process runs again.
    pub fn thaw(&self) {
        let pid = self.live_pid("thaw");
        signal(pid, Signal::SIGCONT).unwrap_or_else(|e| panic!("SIGCONT {pid}: {e}"));
        wait_for_state(pid, false);
    }

    fn live_pid(&self, what: &str) -> u32 {
        let pid = self.pid();
        assert!(pid != 0, "cannot {what} a killed redis-server");
        pid
    }

    /// Kills the server now (thawing it first if it was frozen, by us or by anyone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too, but resume it anyway so that nothing is
            // ever left stopped, whatever happens to the kill.
            let _ = signal(child.id(), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills `servers` when this test process ends, however it ends: for servers shared by a
/// whole test binary, held in a `static` that is never dropped. A small shell process polls
/// for this process and, once it is gone, kills the servers and removes their directories.
pub fn kill_at_exit(servers: &[RedisServer]) {
    let mut args = vec![std::process::id().to_string()];
    args.extend(servers.iter().map(|s| s.pid().to_string()));
    let dirs: Vec<&Path> = servers.iter().map(RedisServer::dir).collect();
    let mut guard = Command::new("sh")
        .arg("-c")
        .arg(
            r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; shift
               for p in "$@"; do case "$p" in /*) rm -rf "$p";; *) kill -9 "$p";; esac; done"#,
        )
        .arg("guard")
        .args(&args)
        .args(dirs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the shell that stops shared servers at exit");
    // Reaped by a thread if it ends first; it normally outlives this process.
    std::thread::spawn(move || guard.wait());
}

/// Sends `sig` to process `pid`, without `/bin/kill` (which slim images lack).
pub fn signal(pid: u32, sig: Signal) -> io::Result<()> {
    let raw = i32::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid}")))?;
    if raw <= 0 {
        // 0 and negative pids address process groups: never what a test means.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pid {pid} is not one process"),
        ));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig).map_err(io::Error::from)
}

/// Waits (bounded) until `/proc` shows process `pid` stopped or running, so a test that
/// freezes a server knows it is frozen. Without `/proc` it returns at once.
fn wait_for_state(pid: u32, stopped: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let path = format!("/proc/{pid}/stat");
    loop {
        let Ok(stat) = std::fs::read_to_string(&path) else {
            return;
        };
        // The state follows the parenthesised command name, which may itself hold `)`.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("?");
        if (state == "T" || state == "t") == stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is still in state {state} 5 s after the signal"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `name:value` from an `INFO` reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// The last lines of a server's log, as a suffix for a panic message.
fn log_tail(path: &Path) -> String {
    let Ok(log) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its log ends with:\n{}", tail.join("\n"))
    }
}

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A builder for a cache at `url` (a [`Proxy`]'s, say) with the harness's generous command and
/// connect timeouts ([`GENEROUS_TIMEOUT`]).
pub fn cache_builder(url: impl Into<String>) -> CacheBuilder {
    Cache::builder(url)
        .command_timeout(GENEROUS_TIMEOUT)
        .connect_timeout(GENEROUS_TIMEOUT)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// Polls `condition` every few milliseconds until it holds; panics, naming the caller's
/// line, when it still does not after `timeout`. For conditions that need `.await`, see
/// [`wait_until_async`]; for one that says why it does not hold yet, [`wait_for`].
///
/// ```no_run
/// # async fn demo(stats: impl Fn() -> u64) {
/// use std::time::Duration;
/// tests::wait_until(Duration::from_secs(5), || stats() > 0).await;
/// # }
/// ```
#[track_caller]
pub fn wait_until<F>(timeout: Duration, mut condition: F) -> impl Future<Output = ()>
where
    F: FnMut() -> bool,
{
    let caller = std::panic::Location::caller();
    poll(caller, timeout, move || {
        let held = condition();
        async move { if held { Ok(()) } else { Err(NoReason) } }
    })
}

/// [`wait_until`] for a condition that is itself async, e.g. a cache call.
#[track_caller]
pub fn wait_until_async<F, Fut>(timeout: Duration, mut condition: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let caller = std::panic::Location::caller();
    poll(caller, timeout, move || {
        let held = condition();
        async move { if held.await { Ok(()) } else { Err(NoReason) } }
    })
}

/// Polls `probe` until it returns `Ok`, and returns what it found; panics, naming the caller's
/// line and the last `Err` (why the condition did not hold yet), when it still has not after
/// `timeout`.
///
/// ```no_run
/// # async fn demo(cache: cached_runtime::Cache) {
/// use std::time::Duration;
/// tests::wait_for(Duration::from_secs(5), || cache.ping()).await;
/// # }
/// ```
#[track_caller]
pub fn wait_for<T, E, F, Fut>(timeout: Duration, mut probe: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let caller = std::panic::Location::caller();
    poll(caller, timeout, move || {
        let probed = probe();
        async move { probed.await.map_err(Reason) }
    })
}

/// The polling loop behind the waits: `probe` until `Ok`, a bounded number of times.
async fn poll<T, E, F, Fut>(
    caller: &'static std::panic::Location<'static>,
    timeout: Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + timeout;
    let mut polls = 0u64;
    loop {
        let why = match probe().await {
            Ok(found) => return found,
            Err(why) => why,
        };
        polls += 1;
        assert!(
            Instant::now() < deadline,
            "condition at {caller} still false after {timeout:?} ({polls} polls){why}"
        );
        tokio::time::sleep(poll_interval(polls)).await;
    }
}

/// A condition that is simply false: nothing to add to the message.
struct NoReason;

impl std::fmt::Display for NoReason {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

/// Why a [`wait_for`] probe failed, as the end of the message.
struct Reason<E>(E);

impl<E: std::fmt::Display> std::fmt::Display for Reason<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, ": {}", self.0)
    }
}

/// 1 ms at first, then up to 20 ms: quick when the condition is about to hold, cheap when not.
fn poll_interval(polls: u64) -> Duration {
    Duration::from_millis(polls.clamp(1, 20))
}
