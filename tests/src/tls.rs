//! TLS deployments for tests: a throwaway CA made by the test with `openssl` (installed with
//! redis-server by scripts/ensure-redis.sh), certificates it signs, and a Redis Cluster and a
//! Sentinel setup that speak TLS on ports of their own (`tls-cluster`, `tls-replication`:
//! the cluster bus and replication are encrypted too).
//!
//! Each server keeps its plain port on loopback beside its TLS port: the harness checks the
//! deployment through it (and a test can show a plaintext port behind `rediss://`); clients
//! under test use only the TLS ports, and `CLUSTER SLOTS` asked over TLS names TLS ports.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use cached_runtime::{Cache, CacheBuilder};
use redis::Value;

use crate::{GENEROUS_TIMEOUT, RedisServer, free_port, kill_at_exit, topology::LocalCluster};

/// The name the TLS sentinels know the primary by.
pub const MASTER_NAME: &str = "tlsmaster";

/// A throwaway CA and the certificates it signed, in a directory removed on drop:
///
/// | file | what |
/// |---|---|
/// | `ca.pem` | the CA |
/// | `server.pem`, `server.key` | for `127.0.0.1` and `localhost` (server and client use, for the cluster bus) |
/// | `client.pem`, `client.key` | a client certificate |
/// | `wronghost.pem`, `wronghost.key` | for `other.invalid` only |
/// | `other-ca.pem` | a CA that signed none of them |
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
}

/// Whether a server asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    /// A client may present one (`tls-auth-clients optional`).
    Optional,
    /// A client without one is refused (`tls-auth-clients yes`): mutual TLS.
    Required,
}

impl Certs {
    /// Makes the CA and certificates (P-256 keys: quick to make).
    pub fn make() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static MADE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cached-test-certs-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the certificates' directory");
        let certs = Self { dir };
        certs.self_signed("ca", "/CN=cached-test-ca");
        certs.self_signed("other-ca", "/CN=another-ca");
        certs.signed(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        certs.signed(
            "client",
            "/CN=cached-test-client",
            "extendedKeyUsage=clientAuth\n",
        );
        certs.signed(
            "wronghost",
            "/CN=other.invalid",
            "subjectAltName=DNS:other.invalid\nextendedKeyUsage=serverAuth\n",
        );
        certs
    }

    /// The path of one of the files in the table above.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// The bytes of one of the files in the table above.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("read a test certificate")
    }

    /// `redis-server` arguments for TLS on `tls_port` with `cert` (`server` or `wronghost`).
    pub fn server_args(&self, tls_port: u16, cert: &str, clients: ClientCerts) -> Vec<String> {
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            self.path(&format!("{cert}.pem")),
            "--tls-key-file".into(),
            self.path(&format!("{cert}.key")),
            "--tls-ca-cert-file".into(),
            self.path("ca.pem"),
            "--tls-auth-clients".into(),
            match clients {
                ClientCerts::Optional => "optional",
                ClientCerts::Required => "yes",
            }
            .into(),
        ]
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(&self.dir)
            .args(args)
            .output()
            .expect("openssl is installed (scripts/ensure-redis.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ]);
    }

    fn self_signed(&self, name: &str, subject: &str) {
        self.key(name);
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            subject,
        ]);
    }

    fn signed(&self, name: &str, subject: &str, extensions: &str) {
        self.key(name);
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext), extensions).expect("write the extensions");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
    }
}

/// The certificates of this binary's shared deployments (kept until it exits).
pub fn shared_certs() -> &'static Certs {
    static SHARED: std::sync::OnceLock<Certs> = std::sync::OnceLock::new();
    SHARED.get_or_init(Certs::make)
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One server with TLS on a port of its own (its certificate `cert`: `server` or
/// `wronghost`), beside its plain port.
pub fn tls_server(
    certs: &Certs,
    cert: &str,
    clients: ClientCerts,
    extra: &[&str],
) -> (RedisServer, u16) {
    let tls_port = free_port();
    let mut args = certs.server_args(tls_port, cert, clients);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (RedisServer::start_with_args(&args), tls_port)
}

/// A Redis Cluster (3 primaries, 3 replicas) speaking TLS, bus and replication included.
#[derive(Debug)]
pub struct TlsCluster {
    /// The same nodes through their plain ports, for checking what was written.
    pub plain: LocalCluster,
    tls_ports: Vec<u16>,
}

impl TlsCluster {
    /// Starts the cluster with `certs`' server certificate; `clients` says whether the
    /// nodes require a client certificate.
    pub fn start(certs: &Certs, clients: ClientCerts) -> Self {
        let tls_ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let plain = LocalCluster::start_with(|i| {
            let mut args = certs.server_args(tls_ports[i], "server", clients);
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            args
        });
        Self { plain, tls_ports }
    }

    /// The cluster of this binary, requiring client certificates (mutual TLS) signed by
    /// [`shared_certs`], started on first use and killed when the binary exits.
    pub fn shared() -> &'static Self {
        static SHARED: std::sync::OnceLock<TlsCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Self::start(shared_certs(), ClientCerts::Required);
            let nodes: Vec<&RedisServer> = (0..6).map(|i| cluster.plain.node(i)).collect();
            kill_all_at_exit(&nodes);
            cluster
        })
    }

    /// `rediss://` URLs of the first `n` nodes, as seeds.
    pub fn seeds(&self, n: usize) -> Vec<String> {
        self.tls_ports
            .iter()
            .take(n)
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }

    /// A cluster cache builder on `n` TLS seeds, trusting `certs`' CA, with the harness's
    /// generous timeouts.
    pub fn cache_builder(&self, certs: &Certs, n: usize) -> CacheBuilder {
        Cache::cluster(self.seeds(n))
            .tls_ca_file(certs.path("ca.pem"))
            .command_timeout(GENEROUS_TIMEOUT)
            .connect_timeout(GENEROUS_TIMEOUT)
    }
}

fn kill_all_at_exit(servers: &[&RedisServer]) {
    // `kill_at_exit` takes the servers by slice; ours are borrowed one by one.
    for server in servers {
        kill_at_exit(std::slice::from_ref(*server));
    }
}

/// A primary and its replica, and three sentinels watching them, all over TLS: the sentinels
/// reach the data nodes and each other through TLS (`tls-replication yes`) and name the
/// primary by its TLS port.
#[derive(Debug)]
pub struct TlsSentinel {
    /// The data nodes and their TLS ports.
    servers: Vec<(RedisServer, u16)>,
    sentinels: Vec<(RedisServer, u16)>,
}

impl TlsSentinel {
    /// Starts the setup and waits until the sentinels agree and the replica is in sync.
    pub fn start(certs: &Certs) -> Self {
        let replication = ["--tls-replication", "yes"];
        let primary = tls_server(certs, "server", ClientCerts::Optional, &replication);
        let primary_tls = primary.1.to_string();
        let replica = tls_server(
            certs,
            "server",
            ClientCerts::Optional,
            &[
                "--tls-replication",
                "yes",
                "--replicaof",
                "127.0.0.1",
                &primary_tls,
            ],
        );
        let sentinels = (0..3)
            .map(|_| {
                let tls_port = free_port();
                let conf = format!(
                    "tls-port {tls_port}\n\
                     tls-cert-file {cert}\n\
                     tls-key-file {key}\n\
                     tls-ca-cert-file {ca}\n\
                     tls-auth-clients optional\n\
                     tls-replication yes\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_tls} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    cert = certs.path("server.pem"),
                    key = certs.path("server.key"),
                    ca = certs.path("ca.pem"),
                );
                (RedisServer::start_sentinel(&conf), tls_port)
            })
            .collect();
        let setup = Self {
            servers: vec![primary, replica],
            sentinels,
        };
        setup.wait_until_settled();
        setup
    }

    /// Kills every server of the setup when the test binary exits (for a shared setup).
    pub fn kill_at_exit(&self) {
        for (server, _) in self.servers.iter().chain(&self.sentinels) {
            kill_at_exit(std::slice::from_ref(server));
        }
    }

    /// Waits until every sentinel names a live primary, sees a healthy replica and knows the
    /// other two sentinels, and the primary has its replica attached.
    pub fn wait_until_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.settled() {
                Ok(()) => return,
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "the TLS sentinels did not settle: {why}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn settled(&self) -> Result<(), String> {
        let primary = self.primary_tls_port()?;
        let server = self
            .server_on(primary)
            .filter(|s| s.pid() != 0)
            .ok_or_else(|| format!("the sentinels name {primary}, which is down"))?;
        for (sentinel, _) in &self.sentinels {
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
                return Err("a sentinel sees no healthy replica".to_owned());
            }
            let others: Vec<Value> = redis::cmd("SENTINEL")
                .arg("SENTINELS")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            if others.len() < 2 {
                return Err("a sentinel does not know the other two yet".to_owned());
            }
        }
        let replication: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut server.try_conn().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if !replication.contains("connected_slaves:1") {
            return Err("the replica is not attached yet".to_owned());
        }
        Ok(())
    }

    fn server_on(&self, tls_port: u16) -> Option<&RedisServer> {
        self.servers
            .iter()
            .find(|(_, p)| *p == tls_port)
            .map(|(s, _)| s)
    }

    /// The TLS port of the primary the first live sentinel names now.
    pub fn primary_tls_port(&self) -> Result<u16, String> {
        let (sentinel, _) = self
            .sentinels
            .iter()
            .find(|(s, _)| s.pid() != 0)
            .ok_or("no live sentinel")?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut sentinel.try_conn().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(port)
    }

    /// A plain connection to the current primary.
    pub fn conn(&self) -> redis::Connection {
        let port = self
            .primary_tls_port()
            .expect("the sentinels name a primary");
        self.server_on(port)
            .expect("the primary is one of ours")
            .conn()
    }

    /// The sentinels' `rediss://` URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, p)| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }

    /// The sentinels' plain `redis://` URLs (they still name the primary by its TLS port).
    pub fn plain_sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|(s, _)| s.url()).collect()
    }

    /// A Sentinel cache builder over TLS trusting `certs`' CA, with generous timeouts.
    pub fn cache_builder(&self, certs: &Certs) -> CacheBuilder {
        Cache::sentinel(MASTER_NAME, self.sentinel_urls())
            .tls_ca_file(certs.path("ca.pem"))
            .command_timeout(GENEROUS_TIMEOUT)
            .connect_timeout(GENEROUS_TIMEOUT)
    }

    /// Kills the current primary (`SIGKILL`); returns its TLS port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self
            .primary_tls_port()
            .expect("the sentinels name a primary");
        self.servers
            .iter_mut()
            .find(|(_, p)| *p == port)
            .expect("the primary is one of ours")
            .0
            .kill();
        port
    }
}
