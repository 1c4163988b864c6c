//! Harness for the daemon tests: the real `shadowcut serve` process against a MariaDB sandbox,
//! and a small HTTP client to drive it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A running daemon process. Killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// The minimal config of the issue, pointed at `port`, plus `extra` TOML.
pub fn config_text(port: u16, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[api]\ntoken_env = \"SHADOWCUT_API_TOKEN\"\n\n{extra}\n\n\
         [targets.default]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\n\
         password_env = \"SHADOWCUT_DEFAULT_PASSWORD\"\n"
    )
}

impl Daemon {
    /// Starts a daemon with `config` text; `token` turns authentication on.
    pub fn start(config: &str, token: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shadowcut.toml");
        std::fs::write(&path, config).expect("write config");
        Daemon::start_at(dir, path, token)
    }

    fn start_at(dir: tempfile::TempDir, config: PathBuf, token: Option<&str>) -> Daemon {
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowcut"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("SHADOWCUT_LOG", "shadowcut=debug")
            .env_remove("SHADOWCUT_DEFAULT_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        match token {
            Some(t) => cmd.env("SHADOWCUT_API_TOKEN", t),
            None => cmd.env_remove("SHADOWCUT_API_TOKEN"),
        };
        let mut child = cmd.spawn().expect("spawn shadowcut serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("shadowcut daemon listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
                panic!("the daemon did not start:\n{log}");
            }
        };
        Daemon {
            child: Some(child),
            addr,
            dir,
            config,
            token: token.map(String::from),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took and whether it succeeded.
    pub fn terminate(&mut self) -> (Duration, bool) {
        let mut child = self.child.take().expect("running daemon");
        let started = Instant::now();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill -TERM");
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (started.elapsed(), status.success());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the daemon did not exit within 60 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running daemon");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the daemon again with the same config (after [`Daemon::terminate`] or
    /// [`Daemon::kill`]).
    pub fn restart(self) -> Daemon {
        let token = self.token.clone();
        let mut this = self;
        assert!(this.child.is_none(), "terminate first");
        let dir = std::mem::replace(&mut this.dir, tempfile::tempdir().expect("tempdir"));
        let config = this.config.clone();
        Daemon::start_at(dir, config, token.as_deref())
    }

    /// Sends a request with this daemon's token (if any).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, self.token.as_deref(), &[])
            .await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, bytes, token, headers).await
    }

    /// Sends `body` as is (for malformed bodies).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: String,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(90), self.http.request(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 90 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// GET /metrics as text.
    pub async fn metrics(&self) -> String {
        match self.call_with("GET", "/metrics", None, None, &[]).await {
            (200, Value::String(s)) => s,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// Starts a migration and returns its id (asserting 201).
    pub async fn start_migration(&self, body: Value) -> String {
        let (status, v) = self.call("POST", "/v1/migrations", Some(body)).await;
        assert_eq!(status, 201, "start: {v}");
        v["id"].as_str().expect("id").to_string()
    }

    pub async fn get(&self, id: &str) -> Value {
        let (status, v) = self
            .call("GET", &format!("/v1/migrations/{id}"), None)
            .await;
        assert_eq!(status, 200, "get {id}: {v}");
        v
    }

    /// Polls until `pred` holds for the migration, or panics after `secs`.
    pub async fn wait_for(
        &self,
        id: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get(id).await;
            if pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{id}: {what} not reached in {secs} s; last: {v}\n--- daemon log tail ---\n{}",
                    tail(&self.log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_state(&self, id: &str, state: &str, secs: u64) -> Value {
        self.wait_for(id, secs, &format!("state {state}"), |v| v["state"] == state)
            .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The value of a metric series whose line starts with `prefix` (name and labels).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
