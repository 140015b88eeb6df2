//! Private Redis and PostgreSQL servers for tests: real servers from Debian's packages, each on
//! a free loopback port with its data in a temp dir, stopped (and restartable) on demand and
//! killed when dropped. `./scripts/test` installs the packages; nothing here is mocked.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn missing(program: &str) -> ! {
    panic!(
        "{program} is not installed: run ./scripts/test, which installs redis-server and \
         postgresql from Debian's packages"
    )
}

/// A private `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one without a password.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts one with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("redis-")
            .tempdir()
            .expect("redis dir");
        let port = free_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.path().to_str().expect("utf-8 temp path"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            dir,
            args,
            child: None,
        };
        server.resume();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The shared log's entries (`ringfence:log`), oldest first, as JSON.
    pub async fn log_entries(&self) -> Vec<serde_json::Value> {
        let mut con = self.connect().await;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("ringfence:log")
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .expect("XRANGE");
        reply
            .ids
            .iter()
            .map(|e| serde_json::from_str(&e.get::<String>("e").expect("payload")).expect("json"))
            .collect()
    }

    /// The ids of the transactions in the shared log, in its order, each once (a transaction
    /// appended twice is applied once; rules and models entries carry none).
    pub async fn log_transaction_order(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut order: Vec<String> = Vec::new();
        for entry in self.log_entries().await {
            if entry["op"] != "tx" {
                continue;
            }
            let id = entry["tx"]["transaction_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if seen.insert(id.clone()) {
                order.push(id);
            }
        }
        order
    }

    /// A connection to it (no password), for assertions on keys and streams.
    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    /// Kills the server (as a crash or a network cut looks to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (its data is gone: persistence is off).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|_| missing("redis-server"));
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// The server's log, for assertions that a secret never reached it and for debugging.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL cluster (initdb + pg_ctl), run as the `postgres` user when the tests
/// run as root (PostgreSQL refuses to run as root).
pub struct PostgresServer {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    running: bool,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("pg_ctl").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| missing("postgresql"))
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl PostgresServer {
    /// Creates a cluster with trust auth on loopback and starts it.
    pub fn start() -> PostgresServer {
        Self::start_with_tls(None)
    }

    /// Creates a cluster that serves TLS with `cert` and `key` (PEM) and accepts only TLS
    /// sessions over TCP (`hostssl` in pg_hba.conf; plain TCP sessions are rejected), and
    /// starts it; without them, as [`PostgresServer::start`].
    pub fn start_with_tls(tls: Option<(&Path, &Path)>) -> PostgresServer {
        let dir = tempfile::Builder::new()
            .prefix("postgres-")
            .tempdir()
            .expect("postgres dir");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown to postgres failed");
        }
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            bin: postgres_bin(),
            running: false,
        };
        server.pg(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if let Some((cert, key)) = tls {
            // PostgreSQL wants its key readable by its own user only.
            let data = PathBuf::from(server.data());
            std::fs::copy(cert, data.join("server.crt")).expect("copy certificate");
            std::fs::copy(key, data.join("server.key")).expect("copy key");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .expect("postgresql.conf");
            std::io::Write::write_all(
                &mut conf,
                b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            )
            .expect("write postgresql.conf");
            let key = data.join("server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod key");
            if running_as_root() {
                for file in ["server.crt", "server.key", "pg_hba.conf"] {
                    let status = Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(data.join(file))
                        .status()
                        .expect("chown");
                    assert!(status.success(), "chown {file} to postgres failed");
                }
            }
        }
        server.resume();
        server
    }

    /// The cluster's directory (data, log), for scans of what reached its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().expect("run a postgres program");
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: clients are cut off).
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        }
    }

    /// Starts it again on the same port, with its data.
    pub fn resume(&mut self) {
        assert!(!self.running, "already running");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        self.running = true;
        wait_for_port(self.port, "postgres");
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let exe = self.bin.join("pg_ctl");
            let data = self.data();
            let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
            let _ = if running_as_root() {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&exe)
                    .args(args)
                    .output()
            } else {
                Command::new(&exe).args(args).output()
            };
        }
    }
}

/// Where `./scripts/test` installs Tansu (a Kafka-compatible broker, built from crates.io):
/// `$RINGFENCE_TANSU`, else `~/.cache/ringfence-test/tansu/bin/tansu`, else `tansu` on PATH.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGFENCE_TANSU") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/ringfence-test/tansu/bin/tansu");
        if cached.exists() {
            return cached;
        }
    }
    PathBuf::from("tansu")
}

/// A private Tansu broker: a real Kafka wire-protocol server, in memory, on a free loopback
/// port. Killed when dropped.
pub struct TansuServer {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl TansuServer {
    /// Starts one and waits until it accepts connections.
    pub fn start() -> TansuServer {
        let dir = tempfile::Builder::new()
            .prefix("tansu-")
            .tempdir()
            .expect("tansu dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("tansu log");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({e}): run ./scripts/test, which installs it with \
                     `cargo install tansu --locked --features dynostore` into \
                     ~/.cache/ringfence-test/tansu"
                )
            });
        wait_for_port(port, "tansu");
        TansuServer { port, dir, child }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log so far (for a failing assertion's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
