//! Private Redis and PostgreSQL servers for tests that restart them: the
//! machine's shared servers are never touched. Each lives in a temp dir on
//! a free port and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn wait_for_port(port: u16, up: bool) {
    let started = Instant::now();
    loop {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "port {port} never became {}",
            if up { "open" } else { "closed" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server with AOF (`appendfsync always`) on its own port.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one in a new temp dir.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut server = Self {
            dir,
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        wait_for_port(self.port, true);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM: it flushes its AOF), waits `down`, starts it again.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            wait_for_port(self.port, false);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A PostgreSQL cluster of its own (`initdb` + `pg_ctl`), run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root).
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .and_then(|o| {
            o.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        });
    from_config
        .map(|dir| dir.join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn as_postgres(program: &Path) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    /// Creates and starts a cluster in a new temp dir.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let data = dir.join("data");
        let out = as_postgres(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("initdb is installed");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Self {
            dir,
            port: free_port(),
        };
        server.pg_ctl("start");
        server
    }

    fn pg_ctl(&self, action: &str) {
        let mut cmd = as_postgres(&pg_bin("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60"]);
        if action != "stop" {
            cmd.arg("-l")
                .arg(self.dir.join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1",
                    self.port,
                    self.dir.display()
                ));
        } else {
            cmd.args(["-m", "fast"]);
        }
        let out = cmd.arg(action).output().expect("pg_ctl is installed");
        assert!(
            out.status.success(),
            "pg_ctl {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for_port(self.port, action != "stop");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown), waits `down`, starts it again.
    pub fn restart(&self, down: Duration) {
        self.pg_ctl("stop");
        std::thread::sleep(down);
        self.pg_ctl("start");
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut cmd = as_postgres(&pg_bin("pg_ctl"));
        let _ = cmd
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
