//! The test harness itself: the server's start-up checks, freeze/thaw by signal, `wait_until`,
//! and the fault-injecting proxy, each against a real `redis-server`.

use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use tests::{Proxy, RedisServer, Signal, signal, wait_until};

/// Long enough for an answer on any machine, short enough that a test does not crawl: a read
/// that times out here is a fault being injected, not a speed being measured.
const SILENCE: Duration = Duration::from_millis(300);

/// A raw RESP connection, so a test sees exactly what comes back (or that nothing does).
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(SILENCE))
            .expect("set a read timeout");
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `PING`; the reply line, or the read error (a timeout when nothing answers).
    fn ping(&mut self) -> std::io::Result<String> {
        self.reader.get_mut().write_all(b"PING\r\n")?;
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Err(ErrorKind::UnexpectedEof.into()),
            _ => Ok(line),
        }
    }

    /// Waits (up to the read timeout) for the peer to close: `Ok(())` on end of stream or reset.
    fn closed(&mut self) -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
            Ok(_) => Err(std::io::Error::other("got data instead of a close")),
            Err(e) => Err(e),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn the_proxy_forwards_pings_both_ways_and_counts_connections() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    assert_eq!(proxy.connections(), 0);

    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(raw.ping().expect("PING through the proxy"), "+PONG\r\n");
    assert_eq!(raw.ping().expect("a second PING"), "+PONG\r\n");

    let mut conn = redis::Client::open(proxy.url())
        .expect("a valid url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect through the proxy");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg(vec![0u8, 255, 13, 10])
        .query(&mut conn)
        .expect("SET through the proxy");
    let direct: Vec<u8> = redis::cmd("GET")
        .arg("k")
        .query(&mut server.conn())
        .expect("GET directly");
    assert_eq!(direct, [0, 255, 13, 10]);
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn a_blackholed_connection_never_answers_while_a_new_one_does() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    let mut old = Raw::connect(proxy.addr());
    assert_eq!(old.ping().expect("PING before the fault"), "+PONG\r\n");

    proxy.blackhole();
    let err = old.ping().expect_err("a black-holed connection answered");
    assert!(is_timeout(&err), "expected a read timeout, got {err:?}");
    // Not closed either: still silent, not an end of stream or a reset.
    let err = old
        .closed()
        .expect_err("a black-holed connection was closed");
    assert!(is_timeout(&err), "expected a read timeout, got {err:?}");

    let mut new = Raw::connect(proxy.addr());
    assert_eq!(new.ping().expect("PING on a new connection"), "+PONG\r\n");
    assert_eq!(proxy.connections(), 2);
    // The server saw the black-holed PINGs of neither direction: 1 + 1 pings answered.
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .expect("INFO");
    assert!(info.contains("cmdstat_ping:calls=2,"), "{info}");

    proxy.heal();
    assert_eq!(
        old.ping().expect("PING after heal"),
        "+PONG\r\n",
        "a healed connection forwards again"
    );
}

#[test]
fn killed_connections_are_closed_and_new_ones_work() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    let mut a = Raw::connect(proxy.addr());
    let mut b = Raw::connect(proxy.addr());
    assert_eq!(a.ping().expect("PING a"), "+PONG\r\n");
    assert_eq!(b.ping().expect("PING b"), "+PONG\r\n");
    proxy.blackhole();

    proxy.kill_connections();
    a.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    a.closed().expect("a killed connection is closed");
    b.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    b.closed()
        .expect("a killed black-holed connection is closed");

    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.ping().expect("PING on a new connection"), "+PONG\r\n");
}

#[test]
fn dropping_the_proxy_closes_its_port_and_connections() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    let addr = proxy.addr();
    let mut raw = Raw::connect(addr);
    assert_eq!(raw.ping().expect("PING"), "+PONG\r\n");
    drop(proxy);
    raw.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    raw.closed()
        .expect("the proxy's connection is closed on drop");
    let refused = TcpStream::connect(addr).expect_err("the proxy still listens");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_frozen_server_answers_nothing_until_thawed() {
    let server = RedisServer::start();
    let mut raw = Raw::connect(server.addr());
    assert_eq!(raw.ping().expect("PING"), "+PONG\r\n");

    server.freeze();
    let err = raw.ping().expect_err("a frozen server answered");
    assert!(is_timeout(&err), "expected a read timeout, got {err:?}");

    server.thaw();
    raw.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    // The PING sent while frozen is answered now, then the new one.
    let mut line = String::new();
    raw.reader.read_line(&mut line).expect("the delayed PONG");
    assert_eq!(line, "+PONG\r\n");
    assert_eq!(raw.ping().expect("PING after thaw"), "+PONG\r\n");
}

#[test]
fn a_frozen_server_is_resumed_and_killed_on_drop() {
    let server = RedisServer::start();
    let pid = server.pid();
    server.freeze();
    drop(server);
    // Killed and reaped, not left stopped: its /proc entry is gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    assert!(stat.is_err(), "process {pid} still exists: {stat:?}");
}

#[test]
fn signal_sends_to_the_given_process_only() {
    let server = RedisServer::start();
    signal(server.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    let mut raw = Raw::connect(server.addr());
    let err = raw.ping().expect_err("a stopped server answered");
    assert!(is_timeout(&err), "expected a read timeout, got {err:?}");
    signal(server.pid(), Signal::SIGCONT).expect("SIGCONT");
    assert!(signal(0, Signal::SIGCONT).is_err(), "pid 0 is a group");
}

#[test]
fn starting_on_a_port_another_server_holds_panics_with_the_exit_status() {
    let holder = RedisServer::start();
    let outcome = catch_unwind(AssertUnwindSafe(|| RedisServer::start_on(holder.port())));
    let payload = outcome.expect_err("a second server on a taken port started");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(
        msg.contains(&format!("on port {} exited with", holder.port())),
        "{msg}"
    );
    // The holder was not mistaken for the new server, and still works.
    let pong: String = redis::cmd("PING")
        .query(&mut holder.conn())
        .expect("the holder answers");
    assert_eq!(pong, "PONG");
}

#[test]
fn start_with_args_starts_a_server_with_those_arguments() {
    let server = RedisServer::start_with_args(&["--maxmemory", "7mb"]);
    let max: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut server.conn())
        .expect("CONFIG GET");
    assert_eq!(max, ["maxmemory", "7340032"]);
}

#[tokio::test]
async fn the_cache_builder_has_generous_timeouts() {
    let server = RedisServer::start();
    let builder = format!("{:?}", server.cache_builder());
    assert!(builder.contains("command_timeout: 5s"), "{builder}");
    assert!(builder.contains("connect_timeout: 5s"), "{builder}");
    let cache = server.cache().await;
    let key = cache.key("h").arg(&1u8).build().expect("a valid key");
    cache
        .invalidate(&key)
        .await
        .expect("the cache reaches its server");
}

#[tokio::test]
async fn wait_until_returns_once_the_condition_holds() {
    let start = std::time::Instant::now();
    wait_until(Duration::from_secs(5), || {
        start.elapsed() > Duration::from_millis(30)
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "still false after")]
async fn wait_until_panics_naming_the_condition_when_it_never_holds() {
    wait_until(Duration::from_millis(50), || false).await;
}
