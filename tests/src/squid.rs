//! A real Squid (Debian's package, which `.ci/run` installs) on a temporary
//! directory and port, with Basic authentication, forwarding every CONNECT
//! to a parent proxy (the test kit's inspecting proxy, the only way to
//! "Google" here). What a company's egress proxy does, password and all.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;

/// Squid, running until dropped.
pub struct Squid {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    dir: TempDir,
}

fn squid_binary() -> PathBuf {
    ["/usr/sbin/squid", "/usr/bin/squid"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("squid is not installed: apt-get install squid (.ci/run does)")
}

impl Squid {
    /// Squid on a free port, asking for `user`:`password`, forwarding to
    /// `parent`.
    pub async fn start(parent: SocketAddr, user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Squid drops to its own user: it must read and write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let hash = crate::blocking(|| {
            std::process::Command::new("openssl")
                .args(["passwd", "-apr1", password])
                .output()
        })
        .expect("openssl passwd");
        let hash = String::from_utf8(hash.stdout).expect("utf-8");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, format!("{user}:{}\n", hash.trim())).expect("passwd");
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let config = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log stdio:{d}/access.log\n\
             coredump_dir {d}\n\
             cache deny all\n\
             auth_param basic program /usr/lib/squid/basic_ncsa_auth {passwd}\n\
             auth_param basic realm chatworker-tests\n\
             acl authed proxy_auth REQUIRED\n\
             acl SSL_ports port 443\n\
             acl CONNECT method CONNECT\n\
             http_access deny CONNECT !SSL_ports\n\
             http_access allow authed\n\
             http_access deny all\n\
             cache_peer {} parent {} 0 no-query no-digest default name=inspector\n\
             never_direct allow all\n\
             shutdown_lifetime 0 seconds\n",
            parent.ip(),
            parent.port(),
            passwd = passwd.display(),
        );
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, config).expect("squid.conf");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let child = tokio::process::Command::new(squid_binary())
            .args(["-N", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start squid");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let squid = Self { addr, child, dir };
        squid.wait_listening().await;
        squid
    }

    async fn wait_listening(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("squid did not listen on {}:\n{}", self.addr, self.logs());
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Squid's own log and its access log.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir().join(name)).unwrap_or_default();
        format!(
            "{}{}{}",
            read("stderr.log"),
            read("cache.log"),
            read("access.log")
        )
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
