//! The test harness itself: the server's start-up checks, freeze/thaw by signal, `wait_until`,
//! `wait_for`, and the fault-injecting proxy, each against a real `redis-server`.

use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use cached_runtime::shape::Plain;
use tests::{
    Proxy, RedisServer, Signal, cache_builder, fixtures::policy, signal, wait_for, wait_until,
};

/// How long a read waits where nothing must come: a read that times out here is a fault being
/// injected, not a speed being measured.
const SILENCE: Duration = Duration::from_millis(300);

/// How long a read waits where an answer must come, even on a loaded machine.
const ANSWER: Duration = Duration::from_secs(5);

/// A raw RESP connection, so a test sees exactly what comes back (or that nothing does).
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        Self {
            reader: BufReader::new(stream),
        }
    }

    fn read_timeout(&self, timeout: Duration) {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .expect("set a read timeout");
    }

    /// Sends `PING` and returns the reply line.
    fn ping(&mut self) -> String {
        self.send_ping();
        self.read_line().expect("an answer to PING")
    }

    /// Sends `PING` and checks that nothing comes back: no answer, no close.
    fn ping_unanswered(&mut self) {
        self.send_ping();
        self.read_timeout(SILENCE);
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?} ({:?})", byte),
        }
    }

    fn send_ping(&mut self) {
        self.reader
            .get_mut()
            .write_all(b"PING\r\n")
            .expect("send PING");
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        self.read_timeout(ANSWER);
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Err(ErrorKind::UnexpectedEof.into()),
            _ => Ok(line),
        }
    }

    /// Waits for the peer to close: end of stream or reset.
    fn assert_closed(&mut self) {
        self.read_timeout(ANSWER);
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
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
    assert_eq!(raw.ping(), "+PONG\r\n");
    assert_eq!(raw.ping(), "+PONG\r\n");

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
    assert_eq!(old.ping(), "+PONG\r\n");

    proxy.blackhole();
    // Neither answered nor closed: silent, like a peer behind a dead link.
    old.ping_unanswered();

    let mut new = Raw::connect(proxy.addr());
    assert_eq!(new.ping(), "+PONG\r\n");
    assert_eq!(proxy.connections(), 2);
    // The server saw the black-holed PINGs of neither direction: 1 + 1 pings answered.
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .expect("INFO");
    assert!(info.contains("cmdstat_ping:calls=2,"), "{info}");

    proxy.heal();
    assert_eq!(
        old.ping(),
        "+PONG\r\n",
        "a healed connection forwards again"
    );
}

#[test]
fn the_proxy_counts_each_connections_commands_and_the_replies_that_reached_it() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(raw.ping(), "+PONG\r\n");
    let mut conn = redis::Client::open(proxy.url())
        .expect("a valid url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect through the proxy");
    // A pipeline: a value that looks like a command, a nested array reply, a null reply.
    let (got, (cursor, keys), position): (Vec<u8>, (String, Vec<String>), Option<i64>) =
        redis::pipe()
            .cmd("SET")
            .arg("k")
            .arg(b"*1\r\n$3\r\nGET\r\n".as_slice())
            .ignore()
            .cmd("GET")
            .arg("k")
            .cmd("SCAN")
            .arg(0)
            .cmd("LPOS")
            .arg("no-list")
            .arg("x")
            .query(&mut conn)
            .expect("the pipeline through the proxy");
    assert_eq!(got, b"*1\r\n$3\r\nGET\r\n");
    assert_eq!(
        (cursor.as_str(), keys.as_slice(), position),
        ("0", &["k".to_owned()][..], None)
    );

    let traffic = proxy.traffic();
    assert_eq!(traffic.len(), 2);
    assert_eq!(traffic[0].commands, ["PING"]);
    assert!(traffic[0].answered());
    // The client's handshake comes first, then the pipeline: every command answered.
    let second = &traffic[1];
    assert_eq!(
        second.commands[second.commands.len() - 4..],
        ["SET", "GET", "SCAN", "LPOS"]
    );
    assert!(second.answered(), "{second:?}");

    // A black hole still counts what the client sent, and no reply that never reached it.
    proxy.blackhole();
    raw.ping_unanswered();
    rt.block_on(wait_until(ANSWER, || proxy.traffic()[0].count("PING") == 2));
    let first = &proxy.traffic()[0];
    assert_eq!(first.replies, 1, "{first:?}");
    assert!(!first.answered());
}

#[test]
fn killed_connections_are_closed_and_new_ones_work() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    let mut a = Raw::connect(proxy.addr());
    let mut b = Raw::connect(proxy.addr());
    assert_eq!(a.ping(), "+PONG\r\n");
    assert_eq!(b.ping(), "+PONG\r\n");
    proxy.blackhole();

    proxy.kill_connections();
    a.assert_closed();
    b.assert_closed();

    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.ping(), "+PONG\r\n");
}

#[test]
fn dropping_the_proxy_closes_its_port_and_connections() {
    let server = RedisServer::start();
    let rt = runtime();
    let proxy = rt.block_on(async { Proxy::start(server.addr()) });
    let addr = proxy.addr();
    let mut raw = Raw::connect(addr);
    assert_eq!(raw.ping(), "+PONG\r\n");
    drop(proxy);
    raw.assert_closed();
    // The listener closes when the runtime runs the aborted accept task's drop, shortly after.
    rt.block_on(wait_until(Duration::from_secs(5), || {
        TcpStream::connect(addr).is_err()
    }));
}

#[test]
fn a_frozen_server_answers_nothing_until_thawed() {
    let server = RedisServer::start();
    let mut raw = Raw::connect(server.addr());
    assert_eq!(raw.ping(), "+PONG\r\n");

    server.freeze();
    raw.ping_unanswered();

    server.thaw();
    // The PING sent while frozen is answered now, then the new one.
    assert_eq!(raw.read_line().expect("the delayed PONG"), "+PONG\r\n");
    assert_eq!(raw.ping(), "+PONG\r\n");
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
fn signal_stops_and_resumes_a_process_and_refuses_pid_zero() {
    let server = RedisServer::start();
    signal(server.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    let mut raw = Raw::connect(server.addr());
    raw.ping_unanswered();
    signal(server.pid(), Signal::SIGCONT).expect("SIGCONT");
    assert_eq!(raw.read_line().expect("the delayed PONG"), "+PONG\r\n");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_works_through_the_proxy() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.addr());
    let cache = cache_builder(proxy.url())
        .build()
        .await
        .expect("connect through the proxy");
    let policy = policy("p");
    let key = cache.key("p").arg(&7u8).build().expect("a valid key");
    let filled = cache
        .get_or_fill::<Plain, _, _>(&key, &policy, async { 70u32 })
        .await;
    assert_eq!(filled, 70);
    let hit = cache
        .get_or_fill::<Plain, _, _>(&key, &policy, async { 0u32 })
        .await;
    assert_eq!(hit, 70, "the second call is a hit through the proxy");
    assert!(proxy.connections() >= 1);
    assert_eq!(cache.stats().total.hits, 1);
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

#[tokio::test]
async fn wait_for_returns_what_the_probe_found_once_it_succeeds() {
    let mut probes = 0;
    let found = wait_for(Duration::from_secs(5), || {
        probes += 1;
        let probe = probes;
        async move {
            if probe >= 3 {
                Ok(probe)
            } else {
                Err(format!("probe {probe}"))
            }
        }
    })
    .await;
    assert_eq!(found, 3);
}

#[tokio::test]
#[should_panic(expected = "polls): the last reason")]
async fn wait_for_panics_with_the_probes_last_reason_when_it_never_succeeds() {
    wait_for(Duration::from_millis(50), || async {
        Err::<(), _>("the last reason")
    })
    .await;
}
