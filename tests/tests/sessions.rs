//! Sessions over real HTTP: the same small app on actix-session and on tower-sessions (axum),
//! both on `cached_runtime::session::Sessions`, against a private server, the shared cluster
//! and Sentinel. Each test runs its flow on both frameworks.

use std::time::Duration;

use cached_runtime::{
    Redis,
    session::{OnUnavailable, Sessions, SessionsBuilder},
};
use futures_util::future::join_all;
use redis::Commands;
use reqwest::StatusCode;
use serde_json::Value;
use tests::{
    GENEROUS_TIMEOUT, RedisServer,
    deployment::Deployment,
    deployment_suite,
    recorder::TestRecorder,
    sessions::{Framework, SessionApp, set_cookie},
    topology::TestRedis,
    topology_suite, wait_for,
};

const FRAMEWORKS: [Framework; 2] = [Framework::Actix, Framework::Axum];

fn named(framework: Framework, test: &str) -> String {
    format!("{test}-{framework:?}")
}

async fn store(redis: &Redis, adjust: impl FnOnce(SessionsBuilder) -> SessionsBuilder) -> Sessions {
    adjust(Sessions::builder(redis).user_field("user"))
        .build()
        .expect("a valid store")
}

async fn redis_of(test: &TestRedis) -> Redis {
    test.cache()
        .await
        .connection()
        .expect("a cache on Redis")
        .clone()
}

async fn status(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.expect("the app answers").status()
}

async fn me(client: &reqwest::Client, app: &SessionApp) -> (StatusCode, Value) {
    let response = client
        .get(app.url("/me"))
        .send()
        .await
        .expect("the app answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn fields(
    client: &reqwest::Client,
    app: &SessionApp,
    n: usize,
    cookie: Option<&str>,
) -> Value {
    let mut request = client.get(app.url(&format!("/fields/{n}")));
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("{}={cookie}", app.cookie));
    }
    let response = request.send().await.expect("the app answers");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

fn with_cookie(
    request: reqwest::RequestBuilder,
    app: &SessionApp,
    cookie: &str,
) -> reqwest::RequestBuilder {
    request.header("cookie", format!("{}={cookie}", app.cookie))
}

topology_suite!(standalone, cluster, sentinel;
    login_me_cart_and_logout_work_end_to_end,
    logging_out_everywhere_ends_every_session_of_the_user_and_no_other,
    a_hundred_concurrent_requests_each_setting_its_own_field_all_persist,
    renewal_keeps_the_writes_of_requests_in_flight_and_retires_the_old_id,
    the_same_field_changed_by_two_requests_in_flight_is_counted_as_a_conflict,
);

async fn login_me_cart_and_logout_work_end_to_end(test: TestRedis) {
    let redis = redis_of(&test).await;
    for framework in FRAMEWORKS {
        let app = SessionApp::start(framework, store(&redis, |b| b).await).await;
        let browser = app.browser();
        assert_eq!(
            me(&browser, &app).await.0,
            StatusCode::UNAUTHORIZED,
            "{framework:?}"
        );
        let login = browser
            .post(app.url("/login/alice"))
            .send()
            .await
            .expect("answers");
        let cookie = set_cookie(&login, app.cookie);
        assert_eq!(
            login.status(),
            StatusCode::OK,
            "{framework:?}: {:?}",
            login.text().await
        );
        let cookie = cookie.expect("a session cookie");
        assert_eq!(
            me(&browser, &app).await,
            (StatusCode::OK, serde_json::json!({"user": "alice"}))
        );
        for (field, value) in [("f0", "apple"), ("f1", "pear")] {
            let r = status(browser.post(app.url(&format!("/set/{field}/{value}")))).await;
            assert_eq!(r, StatusCode::OK, "{framework:?}");
        }
        assert_eq!(
            fields(&browser, &app, 2, None).await,
            serde_json::json!({"f0": "apple", "f1": "pear"}),
            "{framework:?}"
        );
        assert_eq!(
            status(browser.post(app.url("/logout"))).await,
            StatusCode::OK
        );
        assert_eq!(
            me(&browser, &app).await.0,
            StatusCode::UNAUTHORIZED,
            "{framework:?}"
        );
        // The old cookie, replayed, names nothing any more.
        let replay = with_cookie(app.bare().get(app.url("/me")), &app, &cookie);
        assert_eq!(
            status(replay).await,
            StatusCode::UNAUTHORIZED,
            "{framework:?}"
        );
    }
}

async fn logging_out_everywhere_ends_every_session_of_the_user_and_no_other(test: TestRedis) {
    let redis = redis_of(&test).await;
    for framework in FRAMEWORKS {
        let sessions = store(&redis, |b| b.prefix(format!("session:{framework:?}:"))).await;
        let app = SessionApp::start(framework, sessions.clone()).await;
        let (laptop, phone, other) = (app.browser(), app.browser(), app.browser());
        for (browser, user) in [(&laptop, "alice"), (&phone, "alice"), (&other, "bob")] {
            let login = status(browser.post(app.url(&format!("/login/{user}")))).await;
            assert_eq!(login, StatusCode::OK);
        }
        assert_eq!(
            sessions.list("alice").await.expect("listed").len(),
            2,
            "{framework:?}"
        );
        let response = laptop
            .post(app.url("/logout-all"))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["ended"], 2, "{framework:?}");
        assert_eq!(me(&laptop, &app).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            me(&phone, &app).await.0,
            StatusCode::UNAUTHORIZED,
            "{framework:?}"
        );
        assert_eq!(me(&other, &app).await.0, StatusCode::OK, "{framework:?}");
        assert!(sessions.list("alice").await.expect("listed").is_empty());
        // Alice's index is gone; Bob's is there and expires with his session.
        let indexes = test.keys(&format!("session:{framework:?}:user:*"));
        assert_eq!(indexes.len(), 1, "{framework:?}: {indexes:?}");
        let ttl: i64 = test.conn().pttl(&indexes[0]).expect("PTTL");
        assert!(ttl > 0, "the index expires: {ttl}");
    }
}

async fn a_hundred_concurrent_requests_each_setting_its_own_field_all_persist(test: TestRedis) {
    let redis = redis_of(&test).await;
    for framework in FRAMEWORKS {
        let app = SessionApp::start(framework, store(&redis, |b| b).await).await;
        let browser = app.browser();
        assert_eq!(
            status(browser.post(app.url("/login/alice"))).await,
            StatusCode::OK
        );
        let statuses =
            join_all((0..100).map(|i| status(browser.post(app.url(&format!("/set/f{i}/v{i}"))))))
                .await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        let all = fields(&browser, &app, 100, None).await;
        let missing: Vec<usize> = (0..100)
            .filter(|i| all[format!("f{i}")] != format!("v{i}"))
            .collect();
        assert!(missing.is_empty(), "{framework:?}: lost fields {missing:?}");
        assert_eq!(me(&browser, &app).await.0, StatusCode::OK);
    }
}

async fn renewal_keeps_the_writes_of_requests_in_flight_and_retires_the_old_id(test: TestRedis) {
    let redis = redis_of(&test).await;
    for framework in FRAMEWORKS {
        let sessions = store(&redis, |b| b.rotation_grace(Duration::from_millis(500))).await;
        let app = SessionApp::start(framework, sessions).await;
        let bare = app.bare();
        let login = bare
            .post(app.url("/login/alice"))
            .send()
            .await
            .expect("answers");
        let old = set_cookie(&login, app.cookie).expect("a session cookie");
        // Ten requests load the session with the old id and wait.
        let slow = (0..10).map(|i| {
            let request = with_cookie(bare.post(app.url(&format!("/slow/f{i}/v{i}"))), &app, &old);
            tokio::spawn(async move { request.send().await.expect("answers").status() })
        });
        let slow: Vec<_> = slow.collect();
        let gate = std::sync::Arc::clone(&app.gate);
        tests::wait_until(GENEROUS_TIMEOUT, || gate.arrived() == 10).await;
        // The id changes while they are in flight.
        let renew = with_cookie(bare.post(app.url("/renew")), &app, &old)
            .send()
            .await
            .expect("answers");
        assert_eq!(renew.status(), StatusCode::OK);
        let new = set_cookie(&renew, app.cookie).expect("a new session cookie");
        app.gate.release();
        for task in slow {
            assert_eq!(task.await.expect("joins"), StatusCode::OK, "{framework:?}");
        }
        // Every in-flight write landed in the renewed session.
        let all = fields(&bare, &app, 10, Some(&new)).await;
        let missing: Vec<usize> = (0..10)
            .filter(|i| all[format!("f{i}")] != format!("v{i}"))
            .collect();
        assert!(missing.is_empty(), "{framework:?}: lost fields {missing:?}");
        let me_new = with_cookie(bare.get(app.url("/me")), &app, &new);
        assert_eq!(status(me_new).await, StatusCode::OK);
        // The old id stops working once the grace period is over.
        wait_for(GENEROUS_TIMEOUT, || async {
            let me_old = with_cookie(bare.get(app.url("/me")), &app, &old);
            match status(me_old).await {
                StatusCode::UNAUTHORIZED => Ok(()),
                other => Err(format!("the old id still answers {other}")),
            }
        })
        .await;
    }
}

async fn the_same_field_changed_by_two_requests_in_flight_is_counted_as_a_conflict(
    test: TestRedis,
) {
    let redis = redis_of(&test).await;
    let recorder = TestRecorder::global();
    for framework in FRAMEWORKS {
        let name = format!("conflict-{framework:?}-{}", fastrand::u32(..));
        let sessions = store(&redis, |b| b.name(name.clone())).await;
        let app = SessionApp::start(framework, sessions).await;
        let bare = app.bare();
        let login = bare
            .post(app.url("/login/alice"))
            .send()
            .await
            .expect("answers");
        let cookie = set_cookie(&login, app.cookie).expect("a session cookie");
        // Both load the session before either writes: f0 cannot be merged, f1 and f2 can.
        let slow = [("f0", "a"), ("f0", "b"), ("f1", "c"), ("f2", "d")].map(|(f, v)| {
            let request = with_cookie(bare.post(app.url(&format!("/slow/{f}/{v}"))), &app, &cookie);
            tokio::spawn(async move { request.send().await.expect("answers").status() })
        });
        let gate = std::sync::Arc::clone(&app.gate);
        tests::wait_until(GENEROUS_TIMEOUT, || gate.arrived() == 4).await;
        app.gate.release();
        for task in slow {
            assert_eq!(task.await.expect("joins"), StatusCode::OK);
        }
        let conflicts = recorder.counter("redis_session_conflicts_total", &[("store", &name)]);
        assert_eq!(conflicts, Some(1), "{framework:?}");
        let all = fields(&bare, &app, 3, Some(&cookie)).await;
        assert!(all["f0"] == "a" || all["f0"] == "b", "{framework:?}: {all}");
        assert_eq!(
            (&all["f1"], &all["f2"]),
            (&Value::from("c"), &Value::from("d"))
        );
    }
}

/// Expiry and damaged values, with the server counted and inspected.
mod stored {
    use super::*;

    deployment_suite!(standalone, cluster;
        loads_refresh_the_expiry_at_most_once_per_fraction_of_the_idle_timeout,
        sliding_never_extends_the_absolute_lifetime,
        a_corrupted_or_foreign_value_starts_a_new_session,
    );

    /// The session's two keys, when the deployment holds exactly one session.
    fn only_session(deployment: &Deployment) -> (String, String) {
        let mut conn = deployment.conn();
        let keys: Vec<String> = match deployment {
            Deployment::Standalone(_) => conn.keys("session:{*").expect("KEYS"),
            Deployment::Cluster(test) => test.keys("session:{*"),
        };
        let data: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":m")).collect();
        let meta: Vec<&String> = keys.iter().filter(|k| k.ends_with(":m")).collect();
        assert_eq!(meta.len(), 1, "one session: {keys:?}");
        let meta = meta[0].clone();
        let data = data
            .first()
            .map_or_else(|| meta.trim_end_matches(":m").to_owned(), |d| (*d).clone());
        (data, meta)
    }

    /// Brings a session's expiry `ms` from now, as if the time since it was set had passed:
    /// the keys' TTL and the `exp` the store keeps in its meta hash.
    fn pull_in(conn: &mut impl redis::ConnectionLike, data: &str, meta: &str, ms: i64) {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query(conn).expect("TIME");
        let at = secs * 1000 + micros / 1000 + ms;
        let _: () = redis::cmd("HSET")
            .arg(meta)
            .arg("exp")
            .arg(at)
            .query(conn)
            .expect("HSET");
        for key in [data, meta] {
            let _: () = redis::cmd("PEXPIREAT")
                .arg(key)
                .arg(at)
                .query(conn)
                .expect("PEXPIREAT");
        }
    }

    fn flush(deployment: &Deployment) {
        deployment.on_every_primary::<()>(&redis::cmd("FLUSHALL"));
    }

    async fn loads_refresh_the_expiry_at_most_once_per_fraction_of_the_idle_timeout(
        deployment: Deployment,
    ) {
        let redis = deployment.redis().await;
        for framework in FRAMEWORKS {
            flush(&deployment);
            let sessions = store(&redis, |b| b.refresh_fraction(0.5)).await;
            let app = SessionApp::start(framework, sessions).await;
            let browser = app.browser();
            assert_eq!(
                status(browser.post(app.url("/login/alice"))).await,
                StatusCode::OK
            );
            let (data, meta) = only_session(&deployment);
            let before = deployment.calls("pexpireat");
            // Reads within the first half of the idle timeout write nothing.
            for _ in 0..20 {
                assert_eq!(me(&browser, &app).await.0, StatusCode::OK);
            }
            assert_eq!(
                deployment.calls("pexpireat"),
                before,
                "{framework:?}: reads wrote"
            );
            // Past half of it (the keys' expiry pulled in), the next read slides it once.
            let mut conn = deployment.conn();
            pull_in(&mut conn, &data, &meta, 20_000);
            // The test's own PEXPIREATs are not the store's.
            let before = deployment.calls("pexpireat");
            for _ in 0..20 {
                assert_eq!(me(&browser, &app).await.0, StatusCode::OK);
            }
            assert_eq!(
                deployment.calls("pexpireat"),
                before + 2,
                "{framework:?}: one refresh of both keys"
            );
            let ttl: i64 = conn.pttl(&meta).expect("PTTL");
            assert!(
                ttl > 30_000,
                "{framework:?}: slid back to the idle timeout: {ttl}"
            );
        }
    }

    async fn sliding_never_extends_the_absolute_lifetime(deployment: Deployment) {
        let redis = deployment.redis().await;
        for framework in FRAMEWORKS {
            flush(&deployment);
            let sessions = store(&redis, |b| {
                b.absolute_lifetime(Duration::from_secs(3))
                    .refresh_fraction(0.01)
            })
            .await;
            let app = SessionApp::start(framework, sessions).await;
            let browser = app.browser();
            assert_eq!(
                status(browser.post(app.url("/login/alice"))).await,
                StatusCode::OK
            );
            let (_, meta) = only_session(&deployment);
            let mut conn = deployment.conn();
            // The idle timeout is a minute; the session lives three seconds at most.
            let ttl: i64 = conn.pttl(&meta).expect("PTTL");
            assert!(ttl <= 3_000, "{framework:?}: {ttl}");
            pull_in(&mut conn, &meta, &meta, 1_000);
            assert_eq!(me(&browser, &app).await.0, StatusCode::OK);
            let ttl: i64 = conn.pttl(&meta).expect("PTTL");
            assert!(
                ttl <= 3_000,
                "{framework:?}: a refresh passed the deadline: {ttl}"
            );
            // A request that loaded the session before its deadline and writes after it.
            let late = {
                let request = browser.post(app.url("/slow/f0/late"));
                tokio::spawn(async move { request.send().await.expect("answers").status() })
            };
            let gate = std::sync::Arc::clone(&app.gate);
            tests::wait_until(GENEROUS_TIMEOUT, || gate.arrived() == 1).await;
            // Reads keep the session busy; it ends at its deadline all the same.
            wait_for(GENEROUS_TIMEOUT, || async {
                match me(&browser, &app).await.0 {
                    StatusCode::UNAUTHORIZED => Ok(()),
                    other => Err(format!("still signed in: {other}")),
                }
            })
            .await;
            // Its write does not bring the session back.
            app.gate.release();
            assert_eq!(late.await.expect("joins"), StatusCode::OK);
            assert_eq!(me(&browser, &app).await.0, StatusCode::UNAUTHORIZED);
            let left = match &deployment {
                Deployment::Standalone(_) => {
                    let keys: Vec<String> = conn.keys("session:{*").expect("KEYS");
                    keys
                }
                Deployment::Cluster(test) => test.keys("session:{*"),
            };
            assert!(left.is_empty(), "{framework:?}: {left:?}");
        }
    }

    async fn a_corrupted_or_foreign_value_starts_a_new_session(deployment: Deployment) {
        let redis = deployment.redis().await;
        let recorder = TestRecorder::global();
        for framework in FRAMEWORKS {
            let name = named(framework, &format!("corrupt-{}", fastrand::u32(..)));
            for damage in ["string", "meta", "field"] {
                flush(&deployment);
                let sessions = store(&redis, |b| b.name(name.clone())).await;
                let app = SessionApp::start(framework, sessions).await;
                let browser = app.browser();
                assert_eq!(
                    status(browser.post(app.url("/login/alice"))).await,
                    StatusCode::OK
                );
                let (data, meta) = only_session(&deployment);
                let mut conn = deployment.conn();
                match damage {
                    "string" => {
                        let _: () = conn.del(&data).expect("DEL");
                        let _: () = conn.set(&data, "not a session").expect("SET");
                    }
                    "meta" => {
                        let _: () = conn.hdel(&meta, "v").expect("HDEL");
                    }
                    _ => {
                        let _: () = conn.hset(&data, "user", "{not json").expect("HSET");
                    }
                }
                let before = recorder
                    .counter(
                        "redis_session_loads_total",
                        &[("store", &name), ("result", "corrupt")],
                    )
                    .unwrap_or(0);
                assert_eq!(
                    me(&browser, &app).await.0,
                    StatusCode::UNAUTHORIZED,
                    "{framework:?} {damage}"
                );
                let after = recorder
                    .counter(
                        "redis_session_loads_total",
                        &[("store", &name), ("result", "corrupt")],
                    )
                    .unwrap_or(0);
                assert!(after > before, "{framework:?} {damage}: counted");
                // A new session works.
                assert_eq!(
                    status(browser.post(app.url("/set/f0/x"))).await,
                    StatusCode::OK
                );
                assert_eq!(
                    fields(&browser, &app, 1, None).await,
                    serde_json::json!({"f0": "x"})
                );
            }
        }
    }
}

async fn frozen_or_killed(kill: bool) {
    for framework in FRAMEWORKS {
        for policy in [OnUnavailable::Fail, OnUnavailable::Fresh] {
            let mut server = RedisServer::start();
            let redis = Redis::builder(server.url())
                .command_timeout(Duration::from_millis(300))
                .build()
                .await
                .expect("connect");
            let app =
                SessionApp::start(framework, store(&redis, |b| b.on_unavailable(policy)).await)
                    .await;
            let bare = app.bare();
            let login = bare
                .post(app.url("/login/alice"))
                .send()
                .await
                .expect("answers");
            let cookie = set_cookie(&login, app.cookie).expect("a cookie");
            if kill {
                server.kill();
            } else {
                server.freeze();
            }
            let (me_status, set_status) = (
                status(with_cookie(bare.get(app.url("/me")), &app, &cookie)).await,
                status(with_cookie(bare.post(app.url("/set/f0/x")), &app, &cookie)).await,
            );
            match policy {
                OnUnavailable::Fail => {
                    assert_eq!(
                        me_status,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "{framework:?}"
                    );
                    assert_eq!(
                        set_status,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "{framework:?}"
                    );
                }
                _ => {
                    // A fresh, unpersisted session: anonymous, and writes succeed.
                    assert_eq!(me_status, StatusCode::UNAUTHORIZED, "{framework:?}");
                    assert_eq!(set_status, StatusCode::OK, "{framework:?}");
                }
            }
            if !kill {
                server.thaw();
                // Back: the session is there again.
                wait_for(GENEROUS_TIMEOUT * 3, || async {
                    match status(with_cookie(bare.get(app.url("/me")), &app, &cookie)).await {
                        StatusCode::OK => Ok(()),
                        other => Err(format!("not back yet: {other}")),
                    }
                })
                .await;
            }
        }
    }
}

#[tokio::test]
async fn redis_frozen_gives_a_server_error_or_a_fresh_session_as_configured() {
    frozen_or_killed(false).await;
}

#[tokio::test]
async fn redis_killed_gives_a_server_error_or_a_fresh_session_as_configured() {
    frozen_or_killed(true).await;
}
