//! A private PostgreSQL server (Debian's, which `.ci/run` installs) on a
//! temporary directory and port, that a test may stop and start again: the
//! store going away. Tests that only need a database use the shared server
//! `scripts/test` starts (`CHATWORKER_TEST_POSTGRES_URL`).

use std::path::PathBuf;
use std::process::Command;
use tempfile::TempDir;

/// PostgreSQL, running until dropped.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// As root, the server runs as Debian's `postgres` user (initdb refuses
    /// root).
    as_postgres: bool,
}

fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's initdb is missing: apt-get install postgresql")
}

impl Postgres {
    /// A new server on a free port, with a `chatworker` superuser and no
    /// password (trust, on loopback only).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            let chown = crate::blocking(|| {
                Command::new("chown")
                    .arg("postgres")
                    .arg(dir.path())
                    .status()
            })
            .expect("chown");
            assert!(chown.success(), "chown postgres {}", dir.path().display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            dir,
            bin: postgres_bin(),
            port,
            as_postgres,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "chatworker",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        server.start_again();
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = match self.as_postgres {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program);
                c
            }
            false => Command::new(&program),
        };
        let output = crate::blocking(|| command.args(args).output()).expect(tool);
        assert!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://chatworker@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash or a restart would.
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts it (again), on the same port, with its data.
    pub fn start_again(&self) {
        let data = self.data();
        let dir = self.dir.path().display().to_string();
        let log = format!("{dir}/server.log");
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let mut command = match self.as_postgres {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program);
                c
            }
            false => Command::new(&program),
        };
        let _ = crate::blocking(|| {
            command
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output()
        });
    }
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    crate::blocking(|| Command::new("id").arg("-u").output())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
