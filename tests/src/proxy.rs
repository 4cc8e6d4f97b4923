//! A fault-injecting TCP proxy: forwards loopback connections to an upstream (a test's
//! `redis-server`) and, on command, black-holes or kills the connections it holds, so tests can
//! reproduce a half-open connection (a failover, a silent load balancer) or a reset. It counts
//! the commands and replies each connection carried, so a test waits for them, not a while.

mod resp;

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::{AbortHandle, JoinHandle},
};

/// A TCP proxy on a free loopback port in front of `upstream`.
///
/// Every accepted connection is forwarded, both ways, by tasks of the Tokio runtime that
/// started the proxy; dropping the proxy aborts all of them, which closes every socket and the
/// listener as soon as that runtime runs the aborts (at once when it is idle).
///
/// ```no_run
/// # async fn demo(server: &tests::RedisServer) {
/// let proxy = tests::Proxy::start(server.addr());
/// let cache = cached_runtime::Cache::builder(proxy.url()).build().await;
/// proxy.blackhole(); // the cache's connections now hang; new ones work
/// # }
/// ```
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What the accept task and the proxy's methods share.
struct Shared {
    accepted: AtomicUsize,
    conns: Mutex<Conns>,
    /// Every accepted connection's traffic, in accept order, closed ones included.
    traffic: Mutex<Vec<Arc<Mutex<Traffic>>>>,
}

/// What one connection through a [`Proxy`] has carried so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// The name of every command the client sent, upper-cased, in order: forwarded or
    /// swallowed by a black hole alike.
    pub commands: Vec<String>,
    /// How many replies were passed on to the client (RESP3 pushes and attributes not
    /// counted; replies swallowed by a black hole neither).
    pub replies: usize,
}

impl Traffic {
    /// Whether every command sent so far has been answered.
    pub fn answered(&self) -> bool {
        self.replies == self.commands.len()
    }

    /// How many of the commands were `name` (upper-case).
    pub fn count(&self, name: &str) -> usize {
        self.commands.iter().filter(|c| *c == name).count()
    }
}

struct Conns {
    /// Set when the proxy is dropped: the accept task, if it still runs, registers nothing more.
    closed: bool,
    live: Vec<Conn>,
}

/// One forwarded connection: its two pump tasks and their switches.
struct Conn {
    control: Arc<Control>,
    kill: watch::Sender<bool>,
    tasks: [AbortHandle; 2],
}

struct Control {
    /// While set, both directions read and drop what they read, and write nothing.
    blackholed: AtomicBool,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    ///
    /// Must be called inside a Tokio runtime (its tasks run there); panics otherwise.
    pub fn start(upstream: SocketAddr) -> Self {
        let runtime = tokio::runtime::Handle::try_current()
            .expect("Proxy::start must be called inside a Tokio runtime");
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's bound address");
        listener
            .set_nonblocking(true)
            .expect("make the proxy's listener non-blocking");
        let shared = Arc::new(Shared {
            accepted: AtomicUsize::new(0),
            conns: Mutex::new(Conns {
                closed: false,
                live: Vec::new(),
            }),
            traffic: Mutex::new(Vec::new()),
        });
        let accept = {
            let _entered = runtime.enter();
            let listener = TcpListener::from_std(listener).expect("register the proxy's listener");
            runtime.spawn(accept_loop(listener, upstream, Arc::clone(&shared)))
        };
        Self {
            addr,
            upstream,
            shared,
            accept,
        }
    }

    /// The address it listens on (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:{port}`: the upstream Redis, through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// The address it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// How many connections it has accepted so far (forwarded or not).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// What each connection it accepted has carried so far, in accept order (closed ones
    /// included; one refused upstream carried nothing).
    pub fn traffic(&self) -> Vec<Traffic> {
        let traffic = self
            .shared
            .traffic
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        traffic
            .iter()
            .map(|t| t.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect()
    }

    /// Makes every existing connection a black hole: what either side sends is read and
    /// dropped, nothing is written, and no socket is closed, so each peer sees a half-open
    /// connection that never answers. Connections accepted afterwards forward normally.
    pub fn blackhole(&self) {
        self.set_blackholed(true);
    }

    /// Lets the existing connections forward again. Bytes dropped meanwhile stay lost, so a
    /// protocol on such a connection is usually out of step after this.
    pub fn heal(&self) {
        self.set_blackholed(false);
    }

    fn set_blackholed(&self, on: bool) {
        for conn in &self.shared.lock().live {
            conn.control.blackholed.store(on, Ordering::SeqCst);
        }
    }

    /// Closes every existing connection, both sides, with a reset (`RST`). New connections
    /// are still accepted and forwarded.
    pub fn kill_connections(&self) {
        let killed = std::mem::take(&mut self.shared.lock().live);
        for conn in killed {
            // Every await of a pump watches this switch (a `watch` keeps its value, so no pump
            // can miss it): both reset their sockets and end.
            let _ = conn.kill.send(true);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let mut conns = self.shared.lock();
        conns.closed = true;
        for conn in conns.live.drain(..) {
            conn.tasks.iter().for_each(AbortHandle::abort);
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("connections", &self.connections())
            .finish()
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of descriptors, say: back off rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        shared
            .traffic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&traffic));
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        // An upstream that refuses: close the client's connection, as a dead server would.
        let Ok(server) = TcpStream::connect(upstream).await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let control = Arc::new(Control {
            blackholed: AtomicBool::new(false),
        });
        let (kill, killed) = watch::channel(false);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();

        let mut conns = shared.lock();
        if conns.closed {
            return;
        }
        conns
            .live
            .retain(|c| c.tasks.iter().any(|t| !t.is_finished()));
        let up = tokio::spawn(pump(
            client_read,
            server_write,
            Arc::clone(&control),
            killed.clone(),
            Count::Commands(Arc::clone(&traffic)),
        ));
        let down = tokio::spawn(pump(
            server_read,
            client_write,
            Arc::clone(&control),
            killed,
            Count::Replies(traffic),
        ));
        conns.live.push(Conn {
            control,
            kill,
            tasks: [up.abort_handle(), down.abort_handle()],
        });
    }
}

/// What a pump counts into its connection's [`Traffic`].
enum Count {
    /// Client to server: every command read, forwarded or not.
    Commands(Arc<Mutex<Traffic>>),
    /// Server to client: every reply written.
    Replies(Arc<Mutex<Traffic>>),
}

impl Count {
    fn add(&self, frames: Vec<resp::Frame>) {
        let (Self::Commands(traffic) | Self::Replies(traffic)) = self;
        let mut traffic = traffic.lock().unwrap_or_else(PoisonError::into_inner);
        for frame in frames {
            match (self, frame) {
                (Self::Commands(_), resp::Frame::Message(name)) => traffic.commands.push(name),
                (Self::Replies(_), resp::Frame::Message(_)) => traffic.replies += 1,
                (_, resp::Frame::Push | resp::Frame::Attribute) => {}
            }
        }
    }
}

/// Forwards one direction until end of stream, an error, or a kill, counting its frames.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    control: Arc<Control>,
    mut killed: watch::Receiver<bool>,
    count: Count,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = resp::Frames::default();
    loop {
        let n = tokio::select! {
            biased;
            _ = killed.wait_for(|k| *k) => return reset(&from, &to),
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        // Parsed even when swallowed, to stay in step with the stream.
        let found = frames.feed(&buf[..n]);
        if control.blackholed.load(Ordering::SeqCst) {
            // A swallowed command was still sent; a swallowed reply never reached the client.
            if let Count::Commands(_) = count {
                count.add(found);
            }
            continue;
        }
        // Counted before the write, so whatever the client has read is counted already; past
        // the black hole's check, nothing stops these bytes but a kill.
        count.add(found);
        tokio::select! {
            biased;
            _ = killed.wait_for(|k| *k) => return reset(&from, &to),
            written = to.write_all(&buf[..n]) => if written.is_err() { break },
        }
    }
    if control.blackholed.load(Ordering::SeqCst) {
        // A black hole passes nothing on, not even the end of the stream.
        let _ = killed.wait_for(|k| *k).await;
        return reset(&from, &to);
    }
    // Pass the end of the stream on; the socket closes when both directions have ended.
    let _ = to.shutdown().await;
}

/// Makes both sockets of a direction close with `RST` when their halves are dropped.
fn reset(from: &OwnedReadHalf, to: &OwnedWriteHalf) {
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
}
