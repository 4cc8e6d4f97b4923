//! Bad TLS and credential configuration is refused with an error that names what is wrong,
//! never a secret (issue 25): against real TLS servers with certificates of a CA the test
//! made. Also mutual TLS on one server, the testing-only hostname opt-out, and a rotating
//! password read again on reconnect.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use cached_runtime::{Credentials, Redis, RedisBuilder};
use tests::{
    RedisServer,
    tls::{Certs, ClientCerts, tls_server},
    wait_for,
};

/// An error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn builder(url: String) -> RedisBuilder {
    Redis::builder(url)
        .connect_timeout(Duration::from_secs(5))
        .command_timeout(Duration::from_secs(5))
}

/// The error `builder` fails to connect with, as text.
async fn refused(builder: RedisBuilder) -> String {
    match builder.build().await {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => error_chain(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_another_ca_is_refused_naming_the_ca() {
    let certs = Certs::make();
    let (_server, port) = tls_server(&certs, "server", ClientCerts::Optional, &[]);
    let url = format!("rediss://127.0.0.1:{port}");
    let text = refused(builder(url.clone()).tls_ca_file(certs.path("other-ca.pem"))).await;
    assert!(
        text.contains("TLS handshake failed") && text.contains("not signed by a trusted CA"),
        "{text}"
    );
    builder(url)
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .await
        .expect("the right CA is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused_unless_the_testing_only_opt_out_is_set() {
    let certs = Certs::make();
    let (_server, port) = tls_server(&certs, "wronghost", ClientCerts::Optional, &[]);
    let url = format!("rediss://127.0.0.1:{port}");
    let text = refused(builder(url.clone()).tls_ca_pem(certs.read("ca.pem"))).await;
    assert!(text.contains("for another host name"), "{text}");
    let redis = builder(url)
        .tls_ca_pem(certs.read("ca.pem"))
        .danger_accept_invalid_hostnames_for_testing_only()
        .build()
        .await
        .expect("the opt-out accepts a certificate for another name");
    redis.ping().await.expect("PING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostname_opt_out_still_refuses_an_untrusted_ca() {
    let certs = Certs::make();
    let (_server, port) = tls_server(&certs, "wronghost", ClientCerts::Optional, &[]);
    let text = refused(
        builder(format!("rediss://127.0.0.1:{port}"))
            .tls_ca_file(certs.path("other-ca.pem"))
            .danger_accept_invalid_hostnames_for_testing_only(),
    )
    .await;
    assert!(text.contains("not signed by a trusted CA"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_server_behind_rediss_is_named_as_such() {
    let certs = Certs::make();
    let server = RedisServer::start();
    let text = refused(
        builder(format!("rediss://127.0.0.1:{}", server.port())).tls_ca_file(certs.path("ca.pem")),
    )
    .await;
    assert!(
        text.contains("did not answer in TLS") || text.contains("plaintext"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate_and_says_so_without_one() {
    let certs = Certs::make();
    let (_server, port) = tls_server(&certs, "server", ClientCerts::Required, &[]);
    let url = format!("rediss://127.0.0.1:{port}");
    let text = refused(builder(url.clone()).tls_ca_file(certs.path("ca.pem"))).await;
    assert!(text.contains("requires a client certificate"), "{text}");
    // A certificate the server's CA did not sign is refused too.
    let text = refused(
        builder(url.clone())
            .tls_ca_file(certs.path("ca.pem"))
            .tls_client_cert_files(certs.path("other-ca.pem"), certs.path("other-ca.key")),
    )
    .await;
    assert!(text.contains("TLS handshake failed"), "{text}");
    let redis = builder(url)
        .tls_ca_file(certs.path("ca.pem"))
        .tls_client_cert_files(certs.path("client.pem"), certs.path("client.key"))
        .build()
        .await
        .expect("the client certificate is accepted");
    let who: String = redis
        .query(redis::cmd("ECHO").arg("mtls"))
        .await
        .expect("ECHO");
    assert_eq!(who, "mtls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_over_tls_says_authentication_failed_without_the_password() {
    let certs = Certs::make();
    let (_server, port) = tls_server(
        &certs,
        "server",
        ClientCerts::Optional,
        &["--requirepass", "right-s3cret"],
    );
    let text = refused(
        builder(format!("rediss://:wrong-s3cret@127.0.0.1:{port}"))
            .tls_ca_file(certs.path("ca.pem")),
    )
    .await;
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("s3cret"), "a password was printed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_in_the_url_authenticates_over_tls() {
    let certs = Certs::make();
    let (_server, port) = tls_server(
        &certs,
        "server",
        ClientCerts::Optional,
        &["--user", "app", "on", ">app-s3cret", "~*", "+@all"],
    );
    let redis = builder(format!("rediss://app:app-s3cret@127.0.0.1:{port}"))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .await
        .expect("the ACL user authenticates");
    let who: String = redis
        .query(redis::cmd("ACL").arg("WHOAMI"))
        .await
        .expect("ACL WHOAMI");
    assert_eq!(who, "app");
    let text = refused(
        builder(format!("rediss://app:wrong-s3cret@127.0.0.1:{port}"))
            .tls_ca_file(certs.path("ca.pem")),
    )
    .await;
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("s3cret"), "a password was printed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_or_invalid_tls_files_are_named_before_any_connect() {
    let certs = Certs::make();
    let url = "rediss://127.0.0.1:1".to_owned();
    let text = refused(builder(url.clone()).tls_ca_file("/nonexistent/ca.pem")).await;
    assert!(
        text.contains("cannot read the TLS CA file /nonexistent/ca.pem"),
        "{text}"
    );
    let text = refused(builder(url.clone()).tls_ca_pem(b"not a certificate".to_vec())).await;
    assert!(text.contains("TLS CA"), "{text}");
    let text = refused(
        builder(url.clone())
            .tls_ca_file(certs.path("ca.pem"))
            .tls_client_cert_files(certs.path("client.pem"), certs.path("ca.pem")),
    )
    .await;
    assert!(text.contains("TLS client key"), "{text}");
    let text =
        refused(builder("redis://127.0.0.1:1".to_owned()).tls_ca_file(certs.path("ca.pem"))).await;
    assert!(text.contains("no URL is rediss://"), "{text}");
    let text = refused(
        Redis::cluster(["redis://127.0.0.1:1", "rediss://127.0.0.1:2"])
            .connect_timeout(Duration::from_secs(1)),
    )
    .await;
    assert!(text.contains("mix redis:// and rediss://"), "{text}");
}

#[test]
fn debug_output_shows_no_password_nor_key_bytes() {
    let builder = Redis::builder("rediss://app:hunter2@127.0.0.1:6380")
        .tls_ca_pem(b"-----BEGIN CERTIFICATE-----\nCAFEBABE\n".to_vec())
        .tls_client_cert_pem(b"CERTBYTES".to_vec(), b"PRIVATEKEYBYTES".to_vec())
        .credentials_provider(|| Credentials {
            username: None,
            password: "rotated-hunter3".to_owned(),
        });
    let shown = format!("{builder:?}");
    for secret in ["hunter2", "CAFEBABE", "PRIVATEKEYBYTES", "rotated-hunter3"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let creds = Credentials {
        username: Some("app".to_owned()),
        password: "hunter4".to_owned(),
    };
    assert!(!format!("{creds:?}").contains("hunter4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_is_read_again_on_reconnect() {
    let certs = Certs::make();
    let (server, port) = tls_server(
        &certs,
        "server",
        ClientCerts::Optional,
        &["--requirepass", "first"],
    );
    let current = Arc::new(Mutex::new("first".to_owned()));
    let provider = {
        let current = Arc::clone(&current);
        move || Credentials {
            username: None,
            password: current.lock().expect("not poisoned").clone(),
        }
    };
    let redis = builder(format!("rediss://127.0.0.1:{port}"))
        .tls_ca_file(certs.path("ca.pem"))
        .credentials_provider(provider)
        .build()
        .await
        .expect("connects with the provider's password");
    // Rotate: the server takes the new password, the provider hands it out, and every
    // connection made with the old one is closed.
    let mut admin = redis::Client::open(format!("redis://:first@127.0.0.1:{}", server.port()))
        .and_then(|c| c.get_connection())
        .expect("admin connection");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second")
        .query(&mut admin)
        .expect("CONFIG SET requirepass");
    *current.lock().expect("not poisoned") = "second".to_owned();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut admin)
        .expect("CLIENT KILL");
    let echoed: String = wait_for(Duration::from_secs(15), || {
        let redis = redis.clone();
        async move {
            redis
                .query::<String>(redis::cmd("ECHO").arg("rotated"))
                .await
        }
    })
    .await;
    assert_eq!(echoed, "rotated");
}
