//! The demo's admin token never shows: not in its logs (captured at trace level from every
//! thread, the server's workers included, by a global subscriber, so this file is a binary of
//! its own), not in `Debug` output; and an admin invalidation is logged with who and what.

use std::sync::LazyLock;

use reqwest::StatusCode;
use tests::{fixtures::demo::ActixDemo, logs::Captured};

const TOKEN: &str = "s3cr3t-admin-token-never-logged";
/// A wrong token a client sends: not a secret of the service, but nothing a log should keep
/// either.
const WRONG: &str = "wrong-admin-token-also-never-logged";

/// Everything every thread logs, from the first test on.
static LOGS: LazyLock<Captured> = LazyLock::new(|| {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    logs
});

fn logs() -> String {
    LOGS.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_never_appears_in_logs_or_debug_output() {
    LazyLock::force(&LOGS);
    let demo = ActixDemo::start(|config| {
        config.admin_token = Some(TOKEN.into());
        assert!(!format!("{config:?}").contains(TOKEN), "{config:?}");
    })
    .await;
    let (client, base, running) = (&demo.client, &demo.base, &demo.running);
    assert_eq!(
        client
            .get(format!("{base}/items/1"))
            .send()
            .await
            .expect("answers")
            .status(),
        StatusCode::OK
    );
    let admin = |token: &'static str, body: &'static str| {
        client
            .post(format!("{base}/admin/cache/invalidate"))
            .header("authorization", format!("bearer {token}"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", "203.0.113.7")
            .body(body)
            .send()
    };
    let wrong = admin(WRONG, r#"{"prefix": "item"}"#)
        .await
        .expect("answers");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = admin(TOKEN, r#"{"pattern": "item:1*"}"#)
        .await
        .expect("answers");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.expect("body"), r#"{"deleted":1}"#);

    let shown = format!("{running:?} {:?}", running.state());
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("REDACTED"), "{shown}");
    demo.stop().await;

    let logs = logs();
    assert!(!logs.contains(TOKEN), "the token is in the logs:\n{logs}");
    assert!(
        !logs.contains(WRONG),
        "a presented token is in the logs:\n{logs}"
    );
    // Who and what: the audit line names the peer, the forwarded client and the pattern.
    let audit = logs
        .lines()
        .find(|l| l.contains("admin cache invalidation"))
        .unwrap_or_else(|| panic!("no audit line in:\n{logs}"));
    assert!(audit.contains("INFO"), "{audit}");
    assert!(audit.contains(r#"peer="127.0.0.1:"#), "{audit}");
    assert!(audit.contains("203.0.113.7"), "{audit}");
    assert!(audit.contains(r#"scope="pattern""#), "{audit}");
    assert!(audit.contains(r#"target="item:1*""#), "{audit}");
    assert!(audit.contains("deleted=1"), "{audit}");
}
