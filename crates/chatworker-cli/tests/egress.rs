//! Behind the firewall: the worker where nothing resolves Google's names and
//! the only way out is a TLS-inspecting proxy (the test kit's), with its own
//! CA and a password. Pub/Sub's streaming pull, its admin calls and the
//! Chat API all go through it, or the worker says why not and is not ready.

mod common;

use chatworker_testkit::proxy::{Alpn, InspectingProxy};
use common::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
const CREDENTIALS: (&str, &str) = ("alice", "pr0xy-s3cret");

/// One test's world: the simulator (answering as chat.googleapis.com), a
/// fresh topic, the inspecting proxy in front of both, and the worker's
/// listener address.
struct Scene {
    sim: Sim,
    topic: Topic,
    proxy: InspectingProxy,
    ca: String,
    listen: String,
}

impl Scene {
    /// The proxy offers `alpn` and, with `asks`, wants those credentials.
    async fn new(name: &str, alpn: Alpn, asks: Option<(&str, &str)>) -> Self {
        let sim = chat_behind_the_proxy().await;
        let topic = Topic::fresh(name).await;
        let proxy = proxy_in_front(&sim, alpn, asks).await;
        let ca = proxy.ca_file.display().to_string();
        let listen = format!("127.0.0.1:{}", free_port());
        Self {
            sim,
            topic,
            proxy,
            ca,
            listen,
        }
    }

    /// `chatworker check` behind the proxy at `url`: it must succeed; its
    /// output and error output.
    async fn check(&self, url: &str) -> (String, String) {
        let output = tokio::process::Command::new(chatworker())
            .arg("check")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.sim.key_path)
            .env("CHATWORKER_PUBSUB__SUBSCRIPTION", &self.topic.subscription)
            .env("CHATWORKER_CHAT__ENDPOINT", "https://chat.googleapis.com")
            .env("HTTPS_PROXY", url)
            .env("CHATWORKER_NETWORK__EXTRA_CA_FILE", &self.ca)
            .output()
            .await
            .expect("chatworker check");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stdout}\n{stderr}");
        (stdout, stderr)
    }

    /// A worker with `env` that answers six events (one in each of six
    /// spaces named after `tag`) and becomes ready.
    async fn answers_six(&self, tag: &str, env: &[(&str, &str)]) -> Worker {
        let Self { sim, topic, .. } = self;
        let worker = Worker::start(chatworker(), sim, &topic.subscription, env).await;
        for i in 0..6 {
            let message = sim.seed(&format!("spaces/{tag}{i}"), "hello", None).await;
            topic.publish_json(&message_event(&message)).await;
        }
        let answered = eventually(DEADLINE, || async {
            (sim.app_messages().await.len() >= 6).then_some(())
        })
        .await;
        assert!(answered.is_some(), "not all answered:\n{}", worker.logs());
        let ready = eventually(DEADLINE, || async {
            let (status, body) = self.readyz().await;
            (status == 200).then_some(body)
        })
        .await;
        assert!(ready.is_some(), "not ready:\n{}", worker.logs());
        worker
    }

    /// `/readyz`'s status and body.
    async fn readyz(&self) -> (u16, String) {
        get(&format!("http://{}/readyz", self.listen)).await
    }
}

/// A worker that cannot get out: it logs `cause` and the link's warning,
/// and `/readyz` fails saying `why`.
async fn named_and_not_ready(
    scene: &Scene,
    env: &[(&str, &str)],
    cause: &str,
    why: &str,
) -> Worker {
    let worker = Worker::spawn(chatworker(), &scene.sim, &scene.topic.subscription, env);
    // The cause may first show in the subscription probe's outage log; the
    // link's own warning (the pull's) follows within seconds.
    worker.wait_for_log(cause, Duration::from_secs(15)).await;
    worker
        .wait_for_log("Pub/Sub cannot be reached", Duration::from_secs(15))
        .await;
    let (status, body) = scene.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(why), "{body}");
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_a_tls_inspecting_proxy_answers_every_event() {
    let scene = Scene::new("egress", Alpn::Http2, Some(CREDENTIALS)).await;
    let proxy = &scene.proxy;
    let url = proxy.url(Some(CREDENTIALS));
    let mut env = behind(&url, Some(&scene.ca), &scene.listen);
    // As many companies set it: a proxy for plain HTTP too, and a NO_PROXY
    // that does not list loopback. The admin calls still use the gateway.
    env.push(("HTTP_PROXY", &url));
    env.push(("RUST_LOG", "debug"));
    let mut worker = scene.answers_six("EGRESS", &env).await;
    for host in ["pubsub.googleapis.com", "chat.googleapis.com"] {
        assert!(proxy.tunnels_to(host) >= 1, "{host} went through the proxy");
    }
    worker.terminate(Duration::from_secs(30)).await;
    let logs = worker.logs();
    assert!(logs.contains("Pub/Sub reached"), "{logs}");
    assert!(
        logs.contains("(with credentials)"),
        "the way is named: {logs}"
    );
    assert!(
        !logs.contains(CREDENTIALS.1),
        "the proxy's password leaked: {logs}"
    );
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", CREDENTIALS.0, CREDENTIALS.1))
    };
    assert!(
        !logs.contains(&basic),
        "the proxy's credentials leaked: {logs}"
    );
    assert!(
        !logs.contains("NO_PROXY does not list 127.0.0.1"),
        "the admin calls went around the gateway: {logs}"
    );
    assert_eq!(
        worker.summary().get("events_acked").map(String::as_str),
        Some("6")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_grpc_only_a_proxy_that_cannot_carry_http2_is_named_and_the_worker_is_not_ready() {
    let scene = Scene::new("egressh1", Alpn::Http1Only, None).await;
    let url = scene.proxy.url(None);
    let mut env = behind(&url, Some(&scene.ca), &scene.listen);
    env.push(("CHATWORKER_PUBSUB__TRANSPORT", "grpc"));
    let cause = "HTTP/2 was not negotiated with pubsub.googleapis.com";
    let worker = named_and_not_ready(&scene, &env, cause, "HTTP/2").await;
    assert!(!worker.logs().contains("pulling over REST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_without_http2_the_worker_pulls_over_rest_and_answers_every_event() {
    let scene = Scene::new("egressrest", Alpn::Http1Only, Some(CREDENTIALS)).await;
    let Scene { sim, proxy, .. } = &scene;
    let url = proxy.url(Some(CREDENTIALS));
    // The default transport, `auto`.
    let env = behind(&url, Some(&scene.ca), &scene.listen);
    let mut worker = scene.answers_six("EGRESSREST", &env).await;
    assert!(proxy.tunnels_to("pubsub.googleapis.com") >= 1);
    worker.terminate(Duration::from_secs(30)).await;
    let logs = worker.logs();
    assert_eq!(
        logs.matches("pulling over REST instead").count(),
        1,
        "the fallback is said once, at WARNING:\n{logs}"
    );
    assert!(
        !logs.contains("Pub/Sub cannot be reached"),
        "HTTP/2 refused under `auto` is no outage:\n{logs}"
    );
    assert!(logs.contains("Pub/Sub reached"), "{logs}");
    assert!(!logs.contains(CREDENTIALS.1), "the password leaked");
    assert_eq!(
        worker.summary().get("events_acked").map(String::as_str),
        Some("6")
    );
    assert_eq!(sim.app_messages().await.len(), 6, "answered once each");
    let (stdout, _) = scene.check(&url).await;
    for expected in [
        "Pub/Sub (pull over REST: no HTTP/2 this way)",
        "ok    egress to pubsub.googleapis.com:443",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_inspecting_ca_is_named_with_the_setting_that_fixes_it() {
    let scene = Scene::new("egressca", Alpn::Http2, None).await;
    let url = scene.proxy.url(None);
    let env = behind(&url, None, &scene.listen);
    let cause = "issued by \\\"CN=chatworker test inspecting proxy CA, O=chatworker tests\\\"";
    let worker = named_and_not_ready(
        &scene,
        &env,
        cause,
        "CN=chatworker test inspecting proxy CA",
    )
    .await;
    assert!(worker.logs().contains("network.extra_ca_file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_wants_credentials_is_named() {
    let scene = Scene::new("egress407", Alpn::Http2, Some(CREDENTIALS)).await;
    let url = scene.proxy.url(None);
    let env = behind(&url, Some(&scene.ca), &scene.listen);
    let cause = "answered 407: it wants credentials";
    named_and_not_ready(&scene, &env, cause, "407").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_way_to_each_host() {
    let scene = Scene::new("egresscheck", Alpn::Http2, Some(CREDENTIALS)).await;
    let url = scene.proxy.url(Some(CREDENTIALS));
    let (stdout, stderr) = scene.check(&url).await;
    for expected in [
        "pubsub.googleapis.com:443",
        "chat.googleapis.com:443",
        "proxy http://127.0.0.1",
        "HTTP/2",
        "CN=chatworker test inspecting proxy CA",
        "ok    egress to pubsub.googleapis.com:443",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(CREDENTIALS.1) && !stderr.contains(CREDENTIALS.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_away_for_30_s_mid_burst_loses_and_doubles_nothing() {
    const EVENTS: usize = 60;
    let scene = Scene::new("egressdown", Alpn::Http2, Some(CREDENTIALS)).await;
    let Scene {
        sim, topic, proxy, ..
    } = &scene;
    let url = proxy.url(Some(CREDENTIALS));
    let env = behind(&url, Some(&scene.ca), &scene.listen);
    let mut worker = Worker::start(chatworker(), sim, &topic.subscription, &env).await;
    let mut threads = Vec::new();
    for i in 0..EVENTS {
        if i == EVENTS / 3 {
            // A third published and (mostly) answered: the proxy goes away,
            // and the rest is published while it is away.
            let _ = eventually(DEADLINE, || async {
                (sim.app_messages().await.len() >= EVENTS / 6).then_some(())
            })
            .await;
            proxy.set_down(true);
        }
        let message = sim
            .seed("spaces/EGRESSDOWN", &format!("event {i}"), None)
            .await;
        threads.push(
            message["thread"]["name"]
                .as_str()
                .expect("a thread")
                .to_owned(),
        );
        topic.publish_json(&message_event(&message)).await;
    }
    worker
        .wait_for_log("Pub/Sub cannot be reached", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    proxy.set_down(false);
    let back = std::time::Instant::now();
    // Events whose nack or ack could not reach Pub/Sub come back when their
    // lease runs out; the emulator hands such events out again only after
    // 25 to 100 s (RELIABILITY.md, scenario 6), where Pub/Sub does at once.
    let answered = eventually(Duration::from_secs(240), || async {
        let replies = sim.app_messages().await;
        (replies.len() >= EVENTS).then_some(replies)
    })
    .await;
    let Some(replies) = answered else {
        panic!(
            "{} of {EVENTS} answered after the proxy came back:\n{}",
            sim.app_messages().await.len(),
            worker.logs()
        );
    };
    eprintln!(
        "all answered {:?} after the proxy came back",
        back.elapsed()
    );
    // Settle, then count: nothing answered twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replies = sim.app_messages().await.len().max(replies.len());
    assert_eq!(replies, EVENTS, "an event was answered twice");
    let mut answered_threads: Vec<String> = sim
        .app_messages()
        .await
        .iter()
        .filter_map(|r| r["message"]["thread"]["name"].as_str().map(str::to_owned))
        .collect();
    answered_threads.sort();
    threads.sort();
    assert_eq!(
        answered_threads, threads,
        "every event's thread answered once"
    );
    worker.terminate(Duration::from_secs(30)).await;
    assert!(
        worker.logs().contains("Pub/Sub reached again"),
        "{}",
        worker.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_squid_with_a_password() {
    // Squid asks for the password and passes CONNECT on to the inspecting
    // proxy, the only way to "Google" here.
    let scene = Scene::new("egresssquid", Alpn::Http2, None).await;
    let Scene {
        sim,
        topic,
        proxy: inspector,
        ca,
        listen,
    } = &scene;
    let squid =
        chatworker_testkit::squid::Squid::start(inspector.addr, CREDENTIALS.0, CREDENTIALS.1).await;
    // First without the password: Squid's 407 is named.
    let without = squid.url(CREDENTIALS.0, "wr0ng-pa55w0rd");
    let env = behind(&without, Some(ca), listen);
    let refused = Worker::spawn(chatworker(), sim, &topic.subscription, &env);
    refused
        .wait_for_log(
            "answered 407: it refused the credentials",
            Duration::from_secs(15),
        )
        .await;
    assert!(
        !refused.logs().contains("wr0ng-pa55w0rd"),
        "the password leaked"
    );
    drop(refused);
    let url = squid.url(CREDENTIALS.0, CREDENTIALS.1);
    let env = behind(&url, Some(ca), listen);
    let mut worker = Worker::start(chatworker(), sim, &topic.subscription, &env).await;
    for i in 0..4 {
        let message = sim.seed(&format!("spaces/SQUID{i}"), "hello", None).await;
        topic.publish_json(&message_event(&message)).await;
    }
    let answered = eventually(DEADLINE, || async {
        (sim.app_messages().await.len() >= 4).then_some(())
    })
    .await;
    assert!(
        answered.is_some(),
        "not answered through Squid:\n{}\n{}",
        worker.logs(),
        squid.logs()
    );
    worker.terminate(Duration::from_secs(30)).await;
    assert!(
        !worker.logs().contains(CREDENTIALS.1),
        "the password leaked"
    );
    assert!(
        squid.logs().contains("CONNECT pubsub.googleapis.com:443"),
        "{}",
        squid.logs()
    );
}
