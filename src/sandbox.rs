//! Throwaway local MariaDB servers for the tests, the benchmark and the local demo.
//!
//! Each [`Sandbox`] is a `mariadbd` with its own datadir in a temp dir, on a free loopback
//! port, with the binlog configured the way shadowcut needs it (ROW, FULL images). The server
//! is stopped and its files removed when the value is dropped. The system datadir is created
//! once per process and copied, because `mariadb-install-db` is the slow part of a start.
//! Never point anything here at a server it did not start.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::conn::ConnSettings;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0} was not found: install the Debian package mariadb-server (apt-get install mariadb-server)")]
    Missing(&'static str),
    #[error("sandbox {what} failed: {detail}")]
    Failed { what: String, detail: String },
}

fn failed(what: impl Into<String>, detail: impl ToString) -> SandboxError {
    SandboxError::Failed {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// Options for a sandbox server.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub server_id: u32,
    pub buffer_pool_mb: u32,
    /// Extra `--name=value` options for mariadbd.
    pub extra_args: Vec<String>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            server_id: 1,
            buffer_pool_mb: 256,
            extra_args: Vec::new(),
        }
    }
}

pub struct Sandbox {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
}

fn find_binary(names: &[&'static str]) -> Result<PathBuf, SandboxError> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(SandboxError::Missing(names[0]))
}

/// The installed system datadir, shared by every process of this user and this server binary:
/// made once (in a private directory, then renamed into place, so a reader never sees half of
/// it) and only ever copied from. One per process used to leak 114 MB per test binary.
fn template() -> Result<&'static Path, SandboxError> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = TEMPLATE.get_or_init(|| {
        let mariadbd = find_binary(&["mariadbd", "mysqld"]).map_err(|e| e.to_string())?;
        let meta = std::fs::metadata(&mariadbd).map_err(|e| e.to_string())?;
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let key = format!("{}-{}-{}", mariadbd.display(), meta.len(), stamp);
        let h = crate::shadow::short_hash(&key);
        let user = std::env::var("USER").unwrap_or_else(|_| "any".to_string());
        let shared = std::env::temp_dir().join(format!("shadowcut-template-{user}-{h}"));
        if shared.join("ready").exists() {
            return Ok(shared);
        }
        let dir = install_template()?;
        std::fs::write(dir.path().join("ready"), b"").map_err(|e| e.to_string())?;
        let built = dir.keep();
        if std::fs::rename(&built, &shared).is_err() {
            // Another process got there first; use theirs.
            let _ = std::fs::remove_dir_all(&built);
            if !shared.join("ready").exists() {
                return Err(format!(
                    "could not place the template at {}",
                    shared.display()
                ));
            }
        }
        Ok(shared)
    });
    match made {
        Ok(dir) => Ok(dir.as_path()),
        Err(e) => Err(failed("install", e)),
    }
}

/// Runs mariadb-install-db into a new temporary directory.
fn install_template() -> Result<tempfile::TempDir, String> {
    let install =
        find_binary(&["mariadb-install-db", "mysql_install_db"]).map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("shadowcut-template-new-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    // A private tmpdir: the bootstrap server's temporary tables in a shared /tmp were seen
    // removed under it by other processes. One retry covers any other transient failure.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(dir.path().join("data"));
        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--user=root")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(dir);
        }
        last = format!(
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Err(last)
}

/// A port nothing listens on now, and that this process has not handed out before: the
/// kernel may return a just-released port again, and two sandboxes starting at once (tests
/// run in parallel) must not race for it.
fn free_port() -> Result<u16, SandboxError> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| failed("port", e))?;
        let port = l.local_addr().map_err(|e| failed("port", e))?.port();
        let mut taken = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !taken.contains(&port) {
            taken.push(port);
            return Ok(port);
        }
    }
    Err(failed("port", "no free port after 100 tries"))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

impl Sandbox {
    /// Starts a server with default options and waits until it accepts connections.
    pub fn start() -> Result<Sandbox, SandboxError> {
        Self::start_with(SandboxOptions::default())
    }

    pub fn start_with(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let mariadbd = find_binary(&["mariadbd", "mysqld"])?;
        let template = template()?;
        let dir = tempfile::Builder::new()
            .prefix("shadowcut-sandbox-")
            .tempdir()
            .map_err(|e| failed("tempdir", e))?;
        let data = dir.path().join("data");
        copy_dir(&template.join("data"), &data).map_err(|e| failed("datadir copy", e))?;
        let port = free_port()?;
        let d = dir.path().display();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--socket={d}/mariadb.sock"),
            format!("--pid-file={d}/mariadb.pid"),
            format!("--tmpdir={d}"),
            "--user=root".to_string(),
            format!("--log-bin={}/binlog", data.display()),
            format!("--server-id={}", opts.server_id),
            "--binlog-format=ROW".to_string(),
            "--binlog-row-image=FULL".to_string(),
            "--skip-name-resolve".to_string(),
            format!("--innodb-buffer-pool-size={}M", opts.buffer_pool_mb),
            "--innodb-log-file-size=256M".to_string(),
            "--innodb-flush-log-at-trx-commit=2".to_string(),
            "--sync-binlog=0".to_string(),
            "--max-connections=500".to_string(),
            "--log-error=".to_string() + &format!("{d}/error.log"),
        ];
        args.extend(opts.extra_args);
        let mut sandbox = Sandbox {
            child: None,
            dir,
            port,
            args,
        };
        // Another process may take the port between our check and the server's bind: the
        // server then exits, and a new port is tried.
        let mut attempt = 1;
        loop {
            match sandbox.launch(&mariadbd) {
                Ok(()) => return Ok(sandbox),
                Err(_) if attempt < 3 && sandbox.port_was_taken() => {
                    attempt += 1;
                    let old = format!("--port={}", sandbox.port);
                    sandbox.port = free_port()?;
                    for a in sandbox.args.iter_mut().filter(|a| **a == old) {
                        *a = format!("--port={}", sandbox.port);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the last launch failed because the port was in use.
    fn port_was_taken(&self) -> bool {
        std::fs::read_to_string(self.error_log())
            .map(|log| {
                log.contains("Address already in use") || log.contains("Can't start server: Bind")
            })
            .unwrap_or(false)
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    fn launch(&mut self, mariadbd: &Path) -> Result<(), SandboxError> {
        // A socket file left by a killed server would look like readiness.
        let _ = std::fs::remove_file(self.socket_path());
        let child = Command::new(mariadbd)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed("start", e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), SandboxError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Our server creates its socket file only once it listens on the port too: a TCP
            // answer alone may come from another server that holds the port.
            if self.socket_path().exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // The temp dir goes with the sandbox: quote the log's end.
                    let log = std::fs::read_to_string(self.error_log()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(6).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(failed(
                        "start",
                        format!(
                            "mariadbd exited with {status}; its error log ends: {}",
                            tail.join(" | ")
                        ),
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(failed("start", "mariadbd did not listen within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// Root credentials over TCP.
    pub fn settings(&self) -> ConnSettings {
        ConnSettings {
            host: "127.0.0.1".to_string(),
            port: self.port,
            user: "root".to_string(),
            password: None,
        }
    }

    /// A mysql_async URL for root, for tests that drive the server directly.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }

    /// Makes this server a replica of the server on `primary_port` (same machine, root without
    /// password), replicating from the primary's current GTID position, and starts it.
    pub async fn replicate_from(&self, primary_port: u16) -> Result<(), SandboxError> {
        use mysql_async::prelude::Queryable;
        let sql_err = |e: mysql_async::Error| failed("replication setup", e);
        let mut primary =
            mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:{primary_port}/"))
                .await
                .map_err(sql_err)?;
        let pos: Option<String> = primary
            .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
            .await
            .map_err(sql_err)?;
        let _ = primary.disconnect().await;
        let mut replica = mysql_async::Conn::from_url(self.url())
            .await
            .map_err(sql_err)?;
        for sql in [
            format!("SET GLOBAL gtid_slave_pos = '{}'", pos.unwrap_or_default()),
            format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary_port}, \
                 MASTER_USER = 'root', MASTER_PASSWORD = '', MASTER_USE_GTID = slave_pos, \
                 MASTER_CONNECT_RETRY = 1"
            ),
            "START SLAVE".to_string(),
        ] {
            replica.query_drop(sql).await.map_err(sql_err)?;
        }
        let _ = replica.disconnect().await;
        Ok(())
    }

    /// Stops the server (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server hard, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and datadir.
    pub fn restart(&mut self) -> Result<(), SandboxError> {
        self.stop();
        let mariadbd = find_binary(&["mariadbd", "mysqld"])?;
        self.launch(&mariadbd)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}
