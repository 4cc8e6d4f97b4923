//! `rediss://` against a real redis-server listening with TLS, its certificate signed by a
//! throwaway CA that this test makes with `openssl`.

use std::{path::Path, process::Command};

use cached_runtime::{Cache, shape::Plain};
use redis::Commands;
use tests::{RedisServer, fixtures::policy_with_ttl, free_port};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (scripts/ensure-redis.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, in `dir`.
fn make_certificates(dir: &Path) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cached-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

/// Points rustls-native-certs (which redis reads the trusted roots with) at `pem`.
#[allow(unsafe_code)]
fn trust_only(pem: &str) {
    // SAFETY: called from this binary's only test while no other thread runs: before and
    // between the current-thread runtimes below, which are dropped before the next call.
    unsafe { std::env::set_var("SSL_CERT_FILE", pem) };
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn rediss_urls_connect_over_verified_tls_and_refuse_an_unknown_ca() {
    let dir = std::env::temp_dir().join(format!("cached-test-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    make_certificates(&dir);
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=another-ca",
        ],
    );
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let tls_port = free_port();
    let server = RedisServer::start_with(
        free_port(),
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}");

    trust_only(&file("ca.pem"));
    runtime().block_on(async {
        let cache = Cache::builder(url.clone())
            .build()
            .await
            .expect("TLS connection to the test server");
        let key = cache.key("tls").arg(&1u8).build().expect("valid key");
        let policy = policy_with_ttl("tls", 60);
        let v: u32 = cache
            .get_or_fill::<Plain, _, _>(&key, &policy, async { 7 })
            .await;
        assert_eq!(v, 7);
    });
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "the cache installed a process-wide rustls crypto provider"
    );
    let stored: String = server.conn().get("tls:1").expect("GET over plain TCP");
    assert_eq!(stored, "rc1:0:v:7");

    trust_only(&file("other.pem"));
    runtime().block_on(async {
        let refused = Cache::builder(url.clone()).build().await;
        assert!(
            refused.is_err(),
            "a certificate of an untrusted CA was accepted"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
