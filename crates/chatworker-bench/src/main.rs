//! `chatworker-bench`: throughput, latency, CPU and memory per event, and
//! quota use, on loopback, for chatworker or any worker that follows the same
//! environment contract. See BENCHMARKS.md.
//!
//!     cargo build --release && cargo run --release -p chatworker-bench -- --events 20000 --spaces 50
//!
//! Each scenario gets a fresh simulator (in this process) and a fresh topic
//! and subscription on the Pub/Sub emulator (started here unless
//! PUBSUB_EMULATOR_HOST names one). The worker is a separate process, so its
//! CPU and memory are its own, read from /proc. It receives:
//! PUBSUB_EMULATOR_HOST, CHATWORKER_PUBSUB__SUBSCRIPTION,
//! CHATWORKER_CHAT__ENDPOINT, GOOGLE_APPLICATION_CREDENTIALS (a key the
//! simulator trusts; its token_uri is the simulator's),
//! CHATWORKER_WORKER__CONCURRENCY, CHATWORKER_CHAT__*_WRITES_PER_MINUTE and
//! CHATWORKER_SERVER__LISTEN (where chatworker serves /metrics).

mod args;

use anyhow::{Context as _, Result, bail};
use args::{Args, Parsed};
use chatworker_sim::SimOptions;
use chatworker_sim::faults::ControlPatch;
use chatworker_testkit::proxy::{Alpn, InspectingProxy};
use chatworker_testkit::{Emulator, Sim, Topic};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Default, Serialize)]
struct Outcome {
    scenario: String,
    /// The repetition, from 1.
    run: u32,
    worker: String,
    events: usize,
    spaces: usize,
    concurrency: usize,
    /// How long the simulator took to answer each call (the backlog
    /// scenario), in milliseconds.
    chat_latency_ms: u64,
    answered: u64,
    seconds: f64,
    events_per_second: f64,
    latency_ms: Option<Quantiles>,
    worker_latency_ms: Option<Quantiles>,
    cpu_seconds: f64,
    cpu_seconds_per_1000: f64,
    peak_rss_mb: f64,
    /// Times the kernel took the CPU from the worker while it could run
    /// (involuntary context switches): a burst waits while that lasts.
    preempted: u64,
    /// Events that waited for a free lane (`chatworker_lane_waits_total`),
    /// for a worker that reports it.
    lane_waits: Option<u64>,
    statuses: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<QuotaUse>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Quantiles {
    p50: f64,
    p95: f64,
    p99: f64,
}

#[derive(Debug, Serialize)]
struct QuotaUse {
    per_minute_allowed: u32,
    per_minute_achieved_min: f64,
    per_minute_achieved_mean: f64,
    utilisation: f64,
    responses_429: u64,
}

fn quantiles(mut values: Vec<f64>) -> Option<Quantiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Some(Quantiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

/// A simulator in this process, with `faults` from the start.
async fn simulator(faults: ControlPatch) -> Sim {
    Sim::start_with_options(SimOptions {
        faults,
        ..SimOptions::default()
    })
    .await
}

/// How many events a publish call carries: large enough for a quick
/// backlog, small enough that the emulator spreads them.
const PUBLISH_BATCH: usize = 500;

/// A MESSAGE event as Chat publishes it (classic format), in its own thread.
fn event(space: usize, i: usize) -> Value {
    let space = format!("spaces/BENCH{space:03}");
    let user = json!({"name": "users/1000", "displayName": "Bench User", "type": "HUMAN"});
    let thread = json!({"name": format!("{space}/threads/T{i:06}")});
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "type": "MESSAGE",
        "eventTime": time,
        "space": {"name": space, "spaceType": "SPACE", "displayName": "Bench"},
        "user": user,
        "message": {
            "name": format!("{space}/messages/M{i:06}.M{i:06}"),
            "text": format!("benchmark event {i}"),
            "argumentText": format!("benchmark event {i}"),
            "sender": user,
            "createTime": time,
            "thread": thread,
            "space": {"name": space},
        },
        "thread": thread,
        "common": {"hostApp": "CHAT"},
    })
}

/// The worker process and what /proc says about it.
struct Worker {
    process: chatworker_testkit::Worker,
    pid: u32,
    dir: PathBuf,
    metrics_url: Option<String>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Worker {
    /// Starts `command` (a shell command line) with the worker's
    /// environment contract, and waits until it says it is ready.
    async fn spawn(
        args: &Args,
        command: &str,
        topic: &Topic,
        sim: &Sim,
        dir: &Path,
        writes_per_minute: (u32, u32),
        extra_env: &[(&str, &str)],
    ) -> Result<Self> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let (concurrency, space, project) = (
            args.concurrency.to_string(),
            writes_per_minute.0.to_string(),
            writes_per_minute.1.to_string(),
        );
        let log = std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into());
        let mut env = vec![
            ("CHATWORKER_WORKER__CONCURRENCY", concurrency.as_str()),
            ("CHATWORKER_CHAT__SPACE_WRITES_PER_MINUTE", space.as_str()),
            (
                "CHATWORKER_CHAT__PROJECT_WRITES_PER_MINUTE",
                project.as_str(),
            ),
            ("CHATWORKER_SERVER__LISTEN", listen.as_str()),
            ("CHATWORKER_LOG_FORMAT", "json"),
            ("RUST_LOG", log.as_str()),
        ];
        env.extend_from_slice(extra_env);
        let mut process = chatworker_testkit::Worker::spawn_program(
            Path::new("sh"),
            &["-c", &format!("exec {command}")],
            sim,
            &topic.subscription,
            &env,
        );
        if let Some(status) = process.exited() {
            bail!("{command} exited at once ({status})");
        }
        let pid = process.pid();
        let metrics_url = format!("http://{listen}");
        // chatworker says when it is ready; another worker may not.
        let ready = async {
            loop {
                if let Ok(r) = reqwest::get(format!("{metrics_url}/readyz")).await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let metrics_url = tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .ok()
            .map(|()| metrics_url);
        Ok(Self {
            process,
            pid,
            dir: dir.to_owned(),
            metrics_url,
        })
    }

    /// User plus system CPU seconds of the worker and its children so far.
    fn cpu_seconds(&self) -> f64 {
        let ticks = 100.0; // USER_HZ on Linux
        process_tree(self.pid)
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .filter_map(|stat| {
                // Fields after the command's closing parenthesis.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = fields.get(11)?.parse().ok()?;
                let stime: f64 = fields.get(12)?.parse().ok()?;
                Some((utime + stime) / ticks)
            })
            .sum()
    }

    /// Involuntary context switches of all the worker's threads (and its
    /// children's) so far.
    fn preempted(&self) -> u64 {
        process_tree(self.pid)
            .iter()
            .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
            .flat_map(|tasks| tasks.flatten())
            .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
            .filter_map(|status| {
                let line = status
                    .lines()
                    .find(|l| l.starts_with("nonvoluntary_ctxt_switches:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    /// What `finish` measures from.
    fn counters(&self) -> Counters {
        Counters {
            cpu: self.cpu_seconds(),
            preempted: self.preempted(),
        }
    }

    /// The peak resident set (VmHWM) of the worker and its children, in MB.
    fn peak_rss_mb(&self) -> f64 {
        process_tree(self.pid)
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb / 1024.0)
            })
            .sum()
    }

    async fn metrics(&self) -> Option<String> {
        let Some(url) = self.metrics_url.as_ref() else {
            eprintln!("the worker never answered /readyz: worker-added latency not measured");
            return None;
        };
        match reqwest::get(format!("{url}/metrics")).await {
            Ok(r) => r.text().await.ok(),
            Err(e) => {
                eprintln!("cannot read the worker's /metrics: {e}");
                None
            }
        }
    }

    /// Stops the worker and returns what it cost since `before`: CPU
    /// seconds, preemptions, peak RSS in MB, and its /metrics text if it
    /// serves one.
    async fn finish(self, before: Counters) -> Result<Usage> {
        let usage = Usage {
            cpu: self.cpu_seconds() - before.cpu,
            preempted: self.preempted().saturating_sub(before.preempted),
            peak_rss_mb: self.peak_rss_mb(),
            metrics: self.metrics().await,
        };
        self.stop().await?;
        Ok(usage)
    }

    /// Stops the worker (SIGTERM) and keeps its log in the scenario's
    /// directory.
    async fn stop(mut self) -> Result<()> {
        self.process.terminate(Duration::from_secs(40)).await;
        std::fs::write(self.dir.join("worker.log"), self.process.logs())?;
        Ok(())
    }
}

/// A worker's running totals at the start of a scenario.
struct Counters {
    cpu: f64,
    preempted: u64,
}

/// What a worker cost during a scenario.
struct Usage {
    cpu: f64,
    preempted: u64,
    peak_rss_mb: f64,
    metrics: Option<String>,
}

impl Outcome {
    /// Fills in what every scenario measures the same way.
    fn measured(&mut self, answered: u64, seconds: f64, usage: &Usage) {
        self.answered = answered;
        self.seconds = seconds;
        self.events_per_second = answered as f64 / seconds;
        self.worker_latency_ms = usage
            .metrics
            .as_deref()
            .and_then(|m| histogram_quantiles(m, "chatworker_handling_latency_seconds"));
        self.cpu_seconds = usage.cpu;
        self.cpu_seconds_per_1000 = usage.cpu / (answered.max(1) as f64) * 1000.0;
        self.peak_rss_mb = usage.peak_rss_mb;
        self.preempted = usage.preempted;
        self.lane_waits = usage
            .metrics
            .as_deref()
            .and_then(|m| counter_value(m, "chatworker_lane_waits_total"));
    }
}

impl Outcome {
    /// The replies' latencies from each event's publication (`sent`), the
    /// throughput from `started_at` to the last reply (a backlog was there
    /// before the workers started), and Chat's answers.
    async fn replies_since(
        &mut self,
        sim: &Sim,
        sent: &HashMap<String, SystemTime>,
        started_at: SystemTime,
        answered: u64,
    ) -> Result<()> {
        let replies = replies(sim).await?;
        self.latency_ms = quantiles(latencies_ms(&replies, sent));
        let last = replies
            .iter()
            .filter_map(|(_, _, created)| created.duration_since(started_at).ok())
            .max();
        if let Some(last) = last {
            self.seconds = last.as_secs_f64();
            self.events_per_second = answered as f64 / self.seconds;
        }
        self.statuses = statuses(sim).await?;
        Ok(())
    }
}

/// Milliseconds from each event's publication to its reply's creation.
fn latencies_ms(
    replies: &[(String, String, SystemTime)],
    sent: &HashMap<String, SystemTime>,
) -> Vec<f64> {
    replies
        .iter()
        .filter_map(|(_, thread, created)| {
            let at = sent.get(thread)?;
            Some(created.duration_since(*at).ok()?.as_secs_f64() * 1000.0)
        })
        .collect()
}

/// `pid` and its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        if let Some(children) = parents.get(&tree[i]) {
            tree.extend(children);
        }
        i += 1;
    }
    tree
}

/// Quantiles of a Prometheus histogram (`name_bucket{le=…}` lines), in
/// milliseconds, interpolated within buckets.
/// A counter without labels from Prometheus text.
fn counter_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn histogram_quantiles(text: &str, name: &str) -> Option<Quantiles> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let at = |q: f64| {
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &buckets {
            if count >= rank {
                if le.is_infinite() {
                    return lower.0 * 1000.0;
                }
                let span = count - lower.1;
                let within = if span > 0.0 {
                    (rank - lower.1) / span
                } else {
                    1.0
                };
                return (lower.0 + (le - lower.0) * within) * 1000.0;
            }
            lower = (le, count);
        }
        lower.0 * 1000.0
    };
    Some(Quantiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

/// Waits until the simulator has created `n` messages; returns the count.
/// Fails when the worker exits first.
async fn await_answers(sim: &Sim, worker: &mut Worker, n: u64, deadline: Duration) -> Result<u64> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = worker.process.exited() {
            bail!(
                "the worker exited ({status}) before answering; its log:\n{}",
                worker.process.logs()
            );
        }
        let stats = sim.get("/_sim/stats").await;
        let created = stats["created"].as_u64().unwrap_or(0);
        if created >= n || Instant::now() > until {
            return Ok(created);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per reply, its creation time, keyed by the thread it answered.
async fn replies(sim: &Sim) -> Result<Vec<(String, String, SystemTime)>> {
    let all = sim.get("/_sim/messages").await;
    let mut out = Vec::new();
    for record in all["messages"].as_array().into_iter().flatten() {
        if record["byApp"] != true {
            continue;
        }
        let thread = record["body"]["thread"]["name"]
            .as_str()
            .unwrap_or_default();
        let space = record["message"]["space"]["name"]
            .as_str()
            .unwrap_or_default();
        let created = record["message"]["createTime"].as_str().unwrap_or_default();
        let Ok(created) = chrono::DateTime::parse_from_rfc3339(created) else {
            continue;
        };
        out.push((space.to_owned(), thread.to_owned(), created.into()));
    }
    Ok(out)
}

struct Bench {
    args: Args,
    emulator: String,
    command: String,
    label: String,
    dir: PathBuf,
    /// Which repetition runs now, from 1.
    run: std::cell::Cell<u32>,
}

impl Bench {
    fn outcome(&self, scenario: &str, events: usize, spaces: usize) -> Outcome {
        Outcome {
            scenario: scenario.into(),
            run: self.run.get(),
            worker: self.label.clone(),
            events,
            spaces,
            concurrency: self.args.concurrency,
            ..Outcome::default()
        }
    }

    fn scenario_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(format!("{name}-{}", self.run.get()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// N events published first, then the worker drains them.
    async fn drain(&self) -> Result<Outcome> {
        self.drain_of(self.args.events, "drain", 0).await
    }

    /// The drain as behind a firewall: Pub/Sub through the worker's gateway
    /// and a TLS-inspecting proxy (the test kit's) whose CA the worker is
    /// given, so the worker pays for the gateway's hop and for TLS, as it
    /// does in production; Chat stays the local simulator.
    async fn proxied(&self) -> Result<Outcome> {
        self.drain_of(self.args.events, "proxied", 0).await
    }

    /// The drain with the REST transport (`subscriptions.pull` over
    /// HTTP/1.1) straight to the emulator: its cost next to `drain`'s
    /// streaming pull.
    async fn rest(&self) -> Result<Outcome> {
        self.drain_of(self.args.events, "rest", 0).await
    }

    /// The drain with the store on SQLite (a file in the run's directory)
    /// or on a PostgreSQL server of its own, next to `drain`'s `memory:`:
    /// every event's inbox row, outbox entry and finish.
    async fn store(&self, backend: &str) -> Result<Outcome> {
        self.drain_of(self.args.events, backend, 0).await
    }

    /// `proxied` through a proxy that offers only HTTP/1.1: the worker
    /// (`pubsub.transport = "auto"`) falls back to REST.
    async fn proxied_rest(&self) -> Result<Outcome> {
        self.drain_of(self.args.events, "proxied-rest", 0).await
    }

    /// The drain, against a Chat that answers in `--backlog-latency-ms`: the
    /// backlog stays at Pub/Sub while the worker holds what flow control
    /// lets it, so memory must not grow with the backlog.
    async fn backlog(&self) -> Result<Outcome> {
        let latency = self.args.backlog_latency_ms;
        let mut outcome = self.drain_of(self.args.events, "backlog", latency).await?;
        outcome.chat_latency_ms = latency;
        Ok(outcome)
    }

    async fn drain_of(&self, n: usize, name: &str, latency_ms: u64) -> Result<Outcome> {
        let k = self.args.spaces.max(1);
        let dir = self.scenario_dir(name)?;
        let sim = simulator(ControlPatch {
            latency_ms: Some(latency_ms),
            ..ControlPatch::default()
        })
        .await;
        let topic = Topic::fresh_on(&self.emulator, name).await;
        let proxy = match name {
            "proxied" | "proxied-rest" => {
                let emulator = tokio::net::lookup_host(self.emulator.as_str())
                    .await?
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("no address for {}", self.emulator))?;
                Some(
                    InspectingProxy::start(
                        &[("pubsub.googleapis.com", emulator)],
                        match name {
                            "proxied-rest" => Alpn::Http1Only,
                            _ => Alpn::Http2,
                        },
                        None,
                    )
                    .await,
                )
            }
            _ => None,
        };
        let (proxy_url, ca_file) = match &proxy {
            Some(proxy) => (proxy.url(None), proxy.ca_file.display().to_string()),
            None => (String::new(), String::new()),
        };
        let mut extra_env: Vec<(&str, &str)> = match &proxy {
            Some(_) => vec![
                ("PUBSUB_EMULATOR_HOST", ""),
                ("HTTPS_PROXY", proxy_url.as_str()),
                ("CHATWORKER_NETWORK__EXTRA_CA_FILE", ca_file.as_str()),
            ],
            None => Vec::new(),
        };
        if name == "rest" {
            extra_env.push(("CHATWORKER_PUBSUB__TRANSPORT", "rest"));
        }
        let postgres = (name == "postgres").then(chatworker_testkit::postgres::Postgres::start);
        let store_url = match (name, &postgres) {
            ("sqlite", _) => format!("sqlite://{}", dir.join("store.db").display()),
            (_, Some(server)) => server.url(),
            _ => String::new(),
        };
        if !store_url.is_empty() {
            extra_env.push(("CHATWORKER_STORE__URL", store_url.as_str()));
        }
        let events: Vec<Value> = (0..n).map(|i| event(i % k, i)).collect();
        eprintln!("{name}: publishing {n} events over {k} spaces");
        let published = topic.publish_timed(&events, PUBLISH_BATCH).await;
        let sent: HashMap<String, SystemTime> = events
            .iter()
            .zip(published)
            .map(|(e, at)| {
                (
                    e["thread"]["name"].as_str().unwrap_or_default().to_owned(),
                    at,
                )
            })
            .collect();
        eprintln!("{name}: starting the worker");
        let started = Instant::now();
        let started_at = SystemTime::now();
        let mut worker = Worker::spawn(
            &self.args,
            &self.command,
            &topic,
            &sim,
            &dir,
            (0, 0),
            &extra_env,
        )
        .await?;
        let before = worker.counters();
        let answered = await_answers(&sim, &mut worker, n as u64, self.args.timeout).await?;
        let seconds = started.elapsed().as_secs_f64();
        let usage = worker.finish(before).await?;
        let mut outcome = self.outcome(name, n, k);
        outcome.measured(answered, seconds, &usage);
        outcome
            .replies_since(&sim, &sent, started_at, answered)
            .await?;
        topic.remove().await;
        Ok(outcome)
    }

    /// A fleet of `replicas` workers (the heavy example, each pinned to one
    /// core, as a pod with a CPU limit of one) on one PostgreSQL store,
    /// each event costing the handler `--fleet-work-ms` of CPU: the
    /// throughput and the CPU per event as replicas are added.
    async fn fleet(&self, replicas: usize) -> Result<Outcome> {
        let name = format!("fleet-{replicas}");
        let (n, k) = (self.args.fleet_events, self.args.spaces.max(1));
        let dir = self.scenario_dir(&name)?;
        let heavy = match &self.args.heavy_cmd {
            Some(command) => PathBuf::from(command),
            None => std::env::current_exe()?
                .parent()
                .map(|dir| dir.join("examples/heavy"))
                .unwrap_or_default(),
        };
        if !heavy.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p chatworker --example heavy`",
                heavy.display()
            );
        }
        let sim = simulator(ControlPatch::default()).await;
        let topic = Topic::fresh_on(&self.emulator, &name).await;
        let postgres = chatworker_testkit::postgres::Postgres::start();
        let url = postgres.url();
        let work = self.args.fleet_work_ms.to_string();
        let env = [
            ("CHATWORKER_STORE__URL", url.as_str()),
            ("HEAVY_WORK_MS", work.as_str()),
        ];
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut workers = Vec::new();
        for i in 0..replicas {
            let replica = dir.join(format!("replica-{i}"));
            std::fs::create_dir_all(&replica)?;
            let command = format!("taskset -c {} {}", i % cores, heavy.display());
            workers.push(
                Worker::spawn(&self.args, &command, &topic, &sim, &replica, (0, 0), &env).await?,
            );
        }
        let before: Vec<Counters> = workers.iter().map(Worker::counters).collect();
        let events: Vec<Value> = (0..n).map(|i| event(i % k, i)).collect();
        eprintln!("{name}: publishing {n} events over {k} spaces to {replicas} replicas");
        let started = Instant::now();
        let started_at = SystemTime::now();
        // Small batches a little apart: the emulator hands a batch to one
        // stream, and these reach every replica.
        let mut sent = HashMap::new();
        for chunk in events.chunks(5) {
            let published = topic.publish_timed(chunk, 5).await;
            for (e, at) in chunk.iter().zip(published) {
                sent.insert(
                    e["thread"]["name"].as_str().unwrap_or_default().to_owned(),
                    at,
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answered = await_answers(&sim, &mut workers[0], n as u64, self.args.timeout).await?;
        let seconds = started.elapsed().as_secs_f64();
        let mut usage = Usage {
            cpu: 0.0,
            preempted: 0,
            peak_rss_mb: 0.0,
            metrics: None,
        };
        for (worker, before) in workers.into_iter().zip(before) {
            let one = worker.finish(before).await?;
            usage.cpu += one.cpu;
            usage.preempted += one.preempted;
            usage.peak_rss_mb = usage.peak_rss_mb.max(one.peak_rss_mb);
        }
        let mut outcome = self.outcome(&name, n, k);
        outcome.worker = format!(
            "heavy ({} ms), {replicas} replicas",
            self.args.fleet_work_ms
        );
        outcome.measured(answered, seconds, &usage);
        outcome
            .replies_since(&sim, &sent, started_at, answered)
            .await?;
        topic.remove().await;
        Ok(outcome)
    }

    /// Events published at a steady rate while the worker runs: the latency
    /// an event sees when nothing queues ahead of it.
    async fn paced(&self) -> Result<Outcome> {
        let (n, k) = (self.args.paced_events, self.args.spaces.max(1));
        let dir = self.scenario_dir("paced")?;
        let sim = simulator(ControlPatch::default()).await;
        let topic = Topic::fresh_on(&self.emulator, "paced").await;
        let mut worker =
            Worker::spawn(&self.args, &self.command, &topic, &sim, &dir, (0, 0), &[]).await?;
        let before = worker.counters();
        eprintln!("paced: {n} events at {}/s", self.args.paced_rate);
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / self.args.paced_rate.max(0.1));
        let mut tick = tokio::time::interval(interval);
        let mut sent = HashMap::new();
        for i in 0..n {
            tick.tick().await;
            let e = event(i % k, i);
            let at = SystemTime::now();
            topic.publish_json(&e).await;
            sent.insert(
                e["thread"]["name"].as_str().unwrap_or_default().to_owned(),
                at,
            );
        }
        let answered = await_answers(&sim, &mut worker, n as u64, self.args.timeout).await?;
        let seconds = started.elapsed().as_secs_f64();
        let usage = worker.finish(before).await?;
        let mut outcome = self.outcome("paced", n, k);
        outcome.measured(answered, seconds, &usage);
        outcome.latency_ms = quantiles(latencies_ms(&replies(&sim).await?, &sent));
        outcome.statuses = statuses(&sim).await?;
        topic.remove().await;
        Ok(outcome)
    }

    /// A burst into few spaces with the quota enforced: how close to the
    /// allowed rate the worker writes, and how many 429s it collects.
    async fn quota(&self) -> Result<Outcome> {
        let (k, per_space, quota) = (
            self.args.quota_spaces.max(1),
            self.args.quota_events,
            self.args.quota_per_minute,
        );
        let n = k * per_space;
        let dir = self.scenario_dir("quota")?;
        let faults = ControlPatch {
            space_writes_per_minute: Some(quota),
            ..ControlPatch::default()
        };
        let sim = simulator(faults).await;
        let topic = Topic::fresh_on(&self.emulator, "quota").await;
        let events: Vec<Value> = (0..n).map(|i| event(i % k, i)).collect();
        eprintln!(
            "quota: {n} events into {k} spaces at {quota}/min per space (about {} s)",
            per_space * 60 / quota.max(1) as usize
        );
        topic.publish_timed(&events, PUBLISH_BATCH).await;
        let started = Instant::now();
        let mut worker = Worker::spawn(
            &self.args,
            &self.command,
            &topic,
            &sim,
            &dir,
            (quota, 3000),
            &[],
        )
        .await?;
        let before = worker.counters();
        let answered = await_answers(&sim, &mut worker, n as u64, self.args.timeout).await?;
        let seconds = started.elapsed().as_secs_f64();
        let usage = worker.finish(before).await?;
        let mut by_space: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
        for (space, _, created) in replies(&sim).await? {
            by_space.entry(space).or_default().push(created);
        }
        let rates: Vec<f64> = by_space
            .values_mut()
            .filter(|times| times.len() > 1)
            .map(|times| {
                times.sort();
                let span = times[times.len() - 1]
                    .duration_since(times[0])
                    .unwrap_or_default()
                    .as_secs_f64();
                // n writes span n - 1 intervals.
                (times.len() - 1) as f64 / span.max(1e-9) * 60.0
            })
            .collect();
        let statuses = statuses(&sim).await?;
        let mut outcome = self.outcome("quota", n, k);
        outcome.measured(answered, seconds, &usage);
        // Here events wait for the quota by design, holding lanes that the
        // rest wait for: minutes, beyond the histogram's last bucket, and
        // not the worker's overhead.
        outcome.worker_latency_ms = None;
        let min = rates.iter().copied().reduce(f64::min).unwrap_or(0.0);
        let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        outcome.quota = Some(QuotaUse {
            per_minute_allowed: quota,
            per_minute_achieved_min: min,
            per_minute_achieved_mean: mean,
            utilisation: min / f64::from(quota.max(1)),
            responses_429: statuses.get("429").copied().unwrap_or(0),
        });
        outcome.statuses = statuses;
        topic.remove().await;
        Ok(outcome)
    }
}

async fn statuses(sim: &Sim) -> Result<BTreeMap<String, u64>> {
    let stats = sim.get("/_sim/stats").await;
    Ok(serde_json::from_value(stats["statuses"].clone()).unwrap_or_default())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0 / 1024.0)
        })
        .unwrap_or(0.0);
    format!("{cores} cores ({model}), {memory:.0} GiB")
}

fn ms(q: Option<Quantiles>) -> String {
    q.map_or("n/a".into(), |q| {
        format!("{:.1} / {:.1} / {:.1}", q.p50, q.p95, q.p99)
    })
}

fn markdown(outcomes: &[Outcome], machine: &str, command: &str) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "Run on {} by `{command}`, on {machine}.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    md.push_str("| scenario (run) | worker | events (spaces) | answered | events/s | latency p50 / p95 / p99 (ms) | worker-added p50 / p95 / p99 (ms) | CPU s per 1,000 | peak RSS (MB) | preempted | lane waits | Chat answers |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for o in outcomes {
        let statuses: Vec<String> = o
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        md.push_str(&format!(
            "| {} ({}) | {} | {} ({}) | {} | {:.0} | {} | {} | {:.3} | {:.1} | {} | {} | {} |\n",
            o.scenario,
            o.run,
            o.worker,
            o.events,
            o.spaces,
            o.answered,
            o.events_per_second,
            ms(o.latency_ms),
            ms(o.worker_latency_ms),
            o.cpu_seconds_per_1000,
            o.peak_rss_mb,
            o.preempted,
            o.lane_waits.map_or("n/a".into(), |n| n.to_string()),
            statuses.join(", ")
        ));
    }
    for o in outcomes.iter().filter(|o| o.chat_latency_ms > 0) {
        md.push_str(&format!(
            "\n{} ({}, run {}): the simulator answered each call in {} ms, so the backlog waited at Pub/Sub while the worker held what flow control allows; peak RSS {:.1} MB.\n",
            o.scenario, o.worker, o.run, o.chat_latency_ms, o.peak_rss_mb
        ));
    }
    for o in outcomes {
        if let Some(q) = &o.quota {
            md.push_str(&format!(
                "\nQuota ({}, run {}): {} writes per minute per space allowed; achieved {:.1} in the slowest space, {:.1} on average ({:.1}% of the allowance); {} answers of 429.\n",
                o.worker,
                o.run,
                q.per_minute_allowed,
                q.per_minute_achieved_min,
                q.per_minute_achieved_mean,
                q.utilisation * 100.0,
                q.responses_429
            ));
        }
    }
    md
}

const BEGIN: &str = "<!-- bench:results:begin -->";
const END: &str = "<!-- bench:results:end -->";

/// Replaces the results between the markers, keeping the rest of the file.
fn write_markdown(path: &Path, results: &str) -> Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{results}{END}");
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &current[..b], &current[e + END.len()..])
        }
        _ => format!("{current}\n## Results\n\n{block}\n"),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => *args,
        Ok(Parsed::Help) => {
            print!("{}", args::HELP);
            return Ok(());
        }
        Err(e) => bail!("{e}"),
    };
    let command = match &args.worker_cmd {
        Some(c) => c.clone(),
        None => {
            let exe = std::env::current_exe()?;
            let worker = exe.with_file_name("chatworker");
            if !worker.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release` (or pass --worker-cmd)",
                    worker.display()
                );
            }
            format!("{} run", worker.display())
        }
    };
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| match &args.worker_cmd {
            Some(c) => c.clone(),
            None => "chatworker".into(),
        });
    let mut emulator = Emulator::ensure(std::env::var("PUBSUB_EMULATOR_HOST").ok()).await?;
    // The harness reads the emulator's address from the environment, as
    // Google's clients do; set before any task runs.
    // SAFETY: no task runs yet, and the runtime's idle threads never read
    // the environment.
    unsafe { std::env::set_var("PUBSUB_EMULATOR_HOST", emulator.host()) };
    let dir = std::env::current_dir()?
        .join("target/bench")
        .join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bench = Bench {
        emulator: emulator.host().to_owned(),
        command,
        label,
        dir,
        run: std::cell::Cell::new(1),
        args,
    };
    if bench.args.warmup > 0 {
        let warmup = bench.drain_of(bench.args.warmup, "warmup", 0).await;
        warmup.context("the warm-up drain")?;
    }
    let mut outcomes = Vec::new();
    for scenario in &bench.args.scenarios {
        for run in 1..=bench.args.repeat {
            bench.run.set(run);
            let outcome = match scenario.as_str() {
                "drain" => bench.drain().await,
                "proxied" => bench.proxied().await,
                "rest" => bench.rest().await,
                "proxied-rest" => bench.proxied_rest().await,
                "sqlite" => bench.store("sqlite").await,
                "postgres" => bench.store("postgres").await,
                "backlog" => bench.backlog().await,
                "paced" => bench.paced().await,
                "quota" => bench.quota().await,
                "fleet-1" => bench.fleet(1).await,
                "fleet-2" => bench.fleet(2).await,
                "fleet-3" => bench.fleet(3).await,
                other => {
                    bail!(
                        "unknown scenario {other:?} (drain, backlog, paced, quota, proxied, rest, proxied-rest, sqlite, postgres, fleet-1, fleet-2, fleet-3)"
                    )
                }
            };
            let outcome = outcome.with_context(|| format!("scenario {scenario}, run {run}"))?;
            eprintln!("{}", serde_json::to_string(&outcome)?);
            outcomes.push(outcome);
        }
    }
    emulator.stop("TERM");
    let machine = machine();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    if let Some(parent) = bench.args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &bench.args.json,
        serde_json::to_string_pretty(&json!({
            "machine": machine,
            "command": command_line,
            "results": outcomes,
        }))?,
    )?;
    let md = markdown(&outcomes, &machine, &command_line);
    print!("{md}");
    write_markdown(&bench.args.markdown, &md)?;
    eprintln!(
        "results: {} and {}",
        bench.args.markdown.display(),
        bench.args.json.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_read_by_its_exact_name() {
        let text = "# HELP chatworker_lane_waits Events that waited.\n\
                    # TYPE chatworker_lane_waits counter\n\
                    chatworker_lane_waits_total_other 9\n\
                    chatworker_lane_waits_total 12\n";
        assert_eq!(counter_value(text, "chatworker_lane_waits_total"), Some(12));
        assert_eq!(counter_value(text, "chatworker_quota_waits_total"), None);
    }
}
