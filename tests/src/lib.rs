//! Test support: a private `redis-server` per test, on a free loopback port, killed on drop.

use std::{
    io,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cached_runtime::Cache;

/// A `redis-server` child process, killed (and its directory removed) on drop, panics included.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    ///
    /// Panics with one line saying how to install `redis-server` when it is missing.
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// Starts a server on `port` (for restarting one on the same address).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts a server on `port` with extra `redis-server` arguments, e.g.
    /// `["--requirepass", "pw"]`; `{dir}` in an argument stands for the server's scratch
    /// directory (e.g. `--unixsocket {dir}/redis.sock`).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cached-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's temp dir");
        let child = Command::new(redis_server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir".as_ref(), dir.as_os_str()])
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
        let server = Self {
            child: Some(child),
            port,
            dir,
            password,
        };
        server.wait_until_ready();
        server
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        let client = redis::Client::open(url).expect("a valid url");
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
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

    /// A synchronous client connection, for checking what the cache wrote.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("a valid url")
            .get_connection()
            .expect("connect to the test redis-server")
    }

    /// A cache on this server with test-friendly settings.
    pub async fn cache(&self) -> Cache {
        Cache::builder(self.url())
            .build()
            .await
            .expect("connect to the test redis-server")
    }

    /// The server's scratch directory (for a unix socket, say).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The process id, for sending signals (freeze with `SIGSTOP`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
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

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}
