//! A TCP proxy that can deliver a request and lose its reply: on [`Cutter::hold`] the
//! connections it holds keep forwarding what the client sends, but what the server answers is
//! kept back; [`Cutter::cut`] then resets them. The client's command ran, and all it sees is a
//! dropped connection: the ambiguous failure after which a retry would run it twice.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// A proxy on a free loopback port in front of `upstream`; dropping it closes everything.
pub struct Cutter {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Conn>>,
}

struct Conn {
    /// While set, the server's bytes are read and dropped.
    held: Arc<AtomicBool>,
    kill: watch::Sender<bool>,
    tasks: [JoinHandle<()>; 2],
}

impl Cutter {
    /// Listens on a free loopback port and forwards every connection to `upstream`. Must be
    /// called inside a Tokio runtime.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = TcpListener::from_std(listener).expect("register the listener");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept(listener, upstream, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// From now on the existing connections deliver requests but no replies.
    pub fn hold(&self) {
        for conn in self.lock().iter() {
            conn.held.store(true, Ordering::SeqCst);
        }
    }

    /// Resets every existing connection (both sides); new ones forward normally.
    pub fn cut(&self) {
        for conn in std::mem::take(&mut *self.lock()) {
            let _ = conn.kill.send(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in std::mem::take(&mut *self.lock()) {
            conn.tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

impl std::fmt::Debug for Cutter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cutter").field("addr", &self.addr).finish()
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(upstream).await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let held = Arc::new(AtomicBool::new(false));
        let (kill, killed) = watch::channel(false);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = tokio::spawn(pump(
            client_read,
            server_write,
            Arc::new(AtomicBool::new(false)),
            killed.clone(),
        ));
        let down = tokio::spawn(pump(server_read, client_write, Arc::clone(&held), killed));
        let mut conns = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| c.tasks.iter().any(|t| !t.is_finished()));
        conns.push(Conn {
            held,
            kill,
            tasks: [up, down],
        });
    }
}

/// Forwards one direction (dropping what it reads while `held`) until the end of the stream
/// or a kill, which resets both sockets.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    held: Arc<AtomicBool>,
    mut killed: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            _ = killed.wait_for(|k| *k) => break,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        if held.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
}
