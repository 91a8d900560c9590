//! The benchmark's command line, read without a parsing library: every
//! option is `--name VALUE` (or `--name=VALUE`), each with a default.
//! (Only the `chatworker` binary carries `clap`.)

use std::path::PathBuf;
use std::time::Duration;

/// What to measure, and how.
#[derive(Debug)]
pub struct Args {
    /// Events in the drain scenario.
    pub events: usize,
    /// Spaces they are spread over.
    pub spaces: usize,
    /// The worker's concurrency (CHATWORKER_WORKER__CONCURRENCY).
    pub concurrency: usize,
    /// The worker to measure, a shell command; default: the chatworker
    /// binary beside this one, `run`.
    pub worker_cmd: Option<String>,
    /// A name for the worker in the results.
    pub label: Option<String>,
    /// Scenarios to run: drain, backlog, paced, quota, proxied, rest,
    /// proxied-rest, sqlite, postgres.
    pub scenarios: Vec<String>,
    /// Backlog scenario: how long the simulator takes to answer each call.
    pub backlog_latency_ms: u64,
    /// Paced scenario: events per second, published while the worker runs.
    pub paced_rate: f64,
    /// Paced scenario: how many events.
    pub paced_events: usize,
    /// Fleet scenarios: how many events.
    pub fleet_events: usize,
    /// Fleet scenarios: CPU each event costs the handler, in milliseconds.
    pub fleet_work_ms: u64,
    /// Fleet scenarios: the heavy example bot's path.
    pub heavy_cmd: Option<String>,
    /// Quota scenario: spaces the burst goes to.
    pub quota_spaces: usize,
    /// Quota scenario: events per space.
    pub quota_events: usize,
    /// Quota scenario: the per-space write quota, per minute.
    pub quota_per_minute: u32,
    /// Where the Markdown results go (the section between the markers).
    pub markdown: PathBuf,
    /// Where the JSON results go.
    pub json: PathBuf,
    /// Runs of each scenario; every run is its own row.
    pub repeat: u32,
    /// Events drained once before the scenarios, unrecorded (0: none).
    pub warmup: usize,
    /// Give up on a scenario after this long.
    pub timeout: Duration,
}

/// The options, their defaults and what they mean, as `--help` prints them.
pub const HELP: &str = "\\
chatworker-bench: benchmark a Chat worker on loopback

Options (--name VALUE or --name=VALUE):
  --events N            events in the drain scenario [20000]
  --spaces N            spaces they are spread over [50]
  --concurrency N       the worker's concurrency (CHATWORKER_WORKER__CONCURRENCY) [128]
  --worker-cmd CMD      the worker to measure, a shell command [the chatworker binary beside this one, run]
  --label NAME          a name for the worker in the results [chatworker, or the command]
  --scenarios LIST      scenarios to run, comma-separated: drain, backlog, paced, quota, and
                        proxied (the drain through the Pub/Sub gateway and a TLS-inspecting
                        proxy), rest (the drain pulled over REST), proxied-rest (through a
                        proxy without HTTP/2: REST by fallback), sqlite and postgres (the
                        drain with the store there; drain's is memory:), fleet-1, fleet-2
                        and fleet-3 (the heavy example on that many replicas sharing a
                        PostgreSQL store) [drain,backlog,paced,quota]
  --backlog-latency-ms N  backlog scenario: the simulator's answer time, in milliseconds [100]
  --paced-rate N        paced scenario: events per second [100]
  --paced-events N      paced scenario: how many events [2000]
  --fleet-events N      fleet-1, fleet-2, fleet-3: how many events [1000]
  --fleet-work-ms N     fleet scenarios: CPU per event in the handler [20]
  --heavy-cmd PATH      fleet scenarios: the heavy example's binary
                        [target/release/examples/heavy, next to the bench's]
  --quota-spaces N      quota scenario: spaces the burst goes to [3]
  --quota-events N      quota scenario: events per space [90]
  --quota-per-minute N  quota scenario: the per-space write quota, per minute [60]
  --markdown PATH       where the Markdown results go [BENCHMARKS.md]
  --json PATH           where the JSON results go [target/bench/results.json]
  --repeat N            runs of each scenario, each its own row (at least 1) [1]
  --warmup N            events drained once first, unrecorded, to warm the emulator's JVM (0: none) [5000]
  --timeout DURATION    give up on a scenario after this long, e.g. 15m or 90s [15m]
  --help                this text
";

impl Default for Args {
    fn default() -> Self {
        Self {
            events: 20_000,
            spaces: 50,
            concurrency: 128,
            worker_cmd: None,
            label: None,
            scenarios: vec![
                "drain".into(),
                "backlog".into(),
                "paced".into(),
                "quota".into(),
            ],
            backlog_latency_ms: 100,
            paced_rate: 100.0,
            paced_events: 2_000,
            fleet_events: 1_000,
            fleet_work_ms: 20,
            heavy_cmd: None,
            quota_spaces: 3,
            quota_events: 90,
            quota_per_minute: 60,
            markdown: "BENCHMARKS.md".into(),
            json: "target/bench/results.json".into(),
            repeat: 1,
            warmup: 5_000,
            timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// What the command line asked for: a benchmark, or the help text.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these arguments.
    Run(Box<Args>),
    /// Print [`HELP`].
    Help,
}

impl Args {
    /// Reads `args` (without the program's name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Ok(Parsed::Help);
            }
            let Some(option) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?} (see --help)"));
            };
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| format!("--{option} needs a value"))?;
                    (option.to_owned(), value)
                }
            };
            parsed.set(&name, &value)?;
        }
        Ok(Parsed::Run(Box::new(parsed)))
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("--{name} {value:?}: not a number"))
        }
        match name {
            "events" => self.events = number(name, value)?,
            "spaces" => self.spaces = number(name, value)?,
            "concurrency" => self.concurrency = number(name, value)?,
            "worker-cmd" => self.worker_cmd = Some(value.to_owned()),
            "label" => self.label = Some(value.to_owned()),
            "scenarios" => self.scenarios = value.split(',').map(|s| s.trim().to_owned()).collect(),
            "backlog-latency-ms" => self.backlog_latency_ms = number(name, value)?,
            "paced-rate" => self.paced_rate = number(name, value)?,
            "paced-events" => self.paced_events = number(name, value)?,
            "fleet-events" => self.fleet_events = number(name, value)?,
            "fleet-work-ms" => self.fleet_work_ms = number(name, value)?,
            "heavy-cmd" => self.heavy_cmd = Some(value.to_owned()),
            "quota-spaces" => self.quota_spaces = number(name, value)?,
            "quota-events" => self.quota_events = number(name, value)?,
            "quota-per-minute" => self.quota_per_minute = number(name, value)?,
            "markdown" => self.markdown = value.into(),
            "json" => self.json = value.into(),
            "repeat" => match number(name, value)? {
                0 => return Err("--repeat must be at least 1".into()),
                n => self.repeat = n,
            },
            "warmup" => self.warmup = number(name, value)?,
            "timeout" => {
                self.timeout = humantime::parse_duration(value)
                    .map_err(|e| format!("--timeout {value:?}: {e}"))?
            }
            other => return Err(format!("unknown option --{other} (see --help)")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        Args::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn options_take_a_value_either_way_and_keep_their_defaults() {
        let Ok(Parsed::Run(args)) = parse(&[
            "--events",
            "2000",
            "--scenarios=drain,quota",
            "--timeout",
            "8m",
        ]) else {
            panic!("parses");
        };
        assert_eq!(args.events, 2000);
        assert_eq!(args.scenarios, ["drain", "quota"]);
        assert_eq!(args.timeout, Duration::from_secs(480));
        assert_eq!(args.spaces, 50, "a default");
        assert!(matches!(parse(&["--help"]), Ok(Parsed::Help)));
        assert!(parse(&["--repeat", "0"]).is_err());
        assert!(parse(&["--events"]).is_err());
        assert!(
            parse(&["--evnts", "1"])
                .unwrap_err()
                .contains("unknown option --evnts")
        );
        assert!(
            parse(&["--events", "many"])
                .unwrap_err()
                .contains("not a number")
        );
    }
}
