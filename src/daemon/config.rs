//! The daemon's configuration: a TOML file, then environment overrides, then validation.
//!
//! Invariants: unknown keys are refused with the key's name and position (a typo must never be
//! silently ignored: a misspelt threshold would leave a server unguarded); secrets (database
//! passwords, API tokens) are only ever named in the file (an environment variable or a file
//! holding them), read once at load, and never printed: [`Config`]'s `Debug` shows them
//! redacted. Targets, their replicas and their throttle settings are in [`super::target`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use super::target::Target;
use super::target::{Context, TargetSection};
use crate::migration::MigrationOptions;
use crate::throttle::PeakWindow;

/// Why the configuration cannot be used. Each message names the file, key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The file as written. Everything optional has a default; every section refuses unknown keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    targets: BTreeMap<String, TargetSection>,
    /// Default options of every migration; a start request overrides them key by key.
    #[serde(default)]
    defaults: MigrationOptions,
    /// Windows during which every migration on every target pauses.
    #[serde(default)]
    peak_windows: Vec<PeakWindow>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    store: StoreSection,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    /// Environment variable holding one token.
    token_env: Option<String>,
    /// File holding tokens, one a line (blank lines and `#` comments ignored).
    tokens_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSection {
    max_running_per_target: usize,
    /// Seconds a finished migration's metric series are kept before they are dropped.
    metrics_retention_secs: u64,
    /// Seconds a shutdown waits for migrations to reach a safe point.
    shutdown_grace_secs: u64,
    /// Seconds between checkpoint saves of an active migration.
    checkpoint_interval_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_running_per_target: 2,
            metrics_retention_secs: 3600,
            shutdown_grace_secs: 10,
            checkpoint_interval_secs: 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreSection {
    /// Schema on each target holding the migration history.
    schema: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            schema: "_shadowcut".to_string(),
        }
    }
}

/// The loaded, validated configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// API tokens; empty means authentication is off.
    pub tokens: Vec<String>,
    pub targets: BTreeMap<String, Target>,
    pub defaults: MigrationOptions,
    /// Daemon-wide peak windows (each target's list starts with them).
    pub peak_windows: Vec<PeakWindow>,
    pub metrics_retention_secs: u64,
    pub shutdown_grace_secs: u64,
    /// Seconds between checkpoint saves of an active migration (on its target).
    pub checkpoint_interval_secs: u64,
    pub store_schema: String,
    /// Things worth a warning at startup (e.g. a password variable that is not set).
    pub warnings: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tokens", &format!("<{} redacted>", self.tokens.len()))
            .field("targets", &self.targets)
            .field("defaults", &self.defaults)
            .field("peak_windows", &self.peak_windows)
            .field("metrics_retention_secs", &self.metrics_retention_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("checkpoint_interval_secs", &self.checkpoint_interval_secs)
            .field("store_schema", &self.store_schema)
            .finish()
    }
}

/// Environment variables that override the file (documented in the example config).
pub const ENV_LISTEN: &str = "SHADOWCUT_LISTEN";
pub const ENV_MAX_RUNNING: &str = "SHADOWCUT_MAX_RUNNING_PER_TARGET";

/// Reads the environment through a function, so tests can supply their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Loads `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path, &process_env)
    }

    /// Parses `text` (read from `path`, named in errors) with overrides from `env`.
    pub fn from_toml(text: &str, path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |m: String| ConfigError::Invalid(format!("{}: {m}", path.display()));
        let mut warnings = Vec::new();

        let listen_text = env(ENV_LISTEN).unwrap_or(file.listen);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(format!(
                "listen = {listen_text:?} is not an address like \"127.0.0.1:8080\""
            ))
        })?;

        let mut max_running = file.limits.max_running_per_target;
        if let Some(v) = env(ENV_MAX_RUNNING) {
            max_running = v
                .parse()
                .map_err(|_| invalid(format!("{ENV_MAX_RUNNING}={v:?} is not a number")))?;
        }
        if max_running == 0 {
            return Err(invalid(
                "limits.max_running_per_target must be at least 1".into(),
            ));
        }

        let mut tokens = Vec::new();
        if let Some(var) = &file.api.token_env {
            if let Some(t) = env(var).filter(|t| !t.trim().is_empty()) {
                tokens.push(t.trim().to_string());
            }
        }
        if let Some(p) = &file.api.tokens_file {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }

        if file.targets.is_empty() {
            return Err(invalid(
                "no target: add a [targets.NAME] section with host, port, user and password_env"
                    .into(),
            ));
        }
        file.defaults
            .validate()
            .map_err(|e| invalid(format!("defaults: {e}")))?;
        for w in &file.peak_windows {
            w.validate()
                .map_err(|e| invalid(format!("peak_windows: {e}")))?;
        }
        let ctx = Context {
            env,
            invalid: &invalid,
            max_running,
            defaults: &file.defaults,
            peak_windows: &file.peak_windows,
        };
        let mut targets = BTreeMap::new();
        for (name, t) in file.targets {
            let target = t.build(name.clone(), &ctx, &mut warnings)?;
            targets.insert(name, target);
        }
        if !(1..=3600).contains(&file.limits.checkpoint_interval_secs) {
            return Err(invalid(
                "limits.checkpoint_interval_secs must be between 1 and 3600".into(),
            ));
        }
        let schema = file.store.schema;
        if schema.is_empty() || schema.len() > 64 || schema.contains('`') {
            return Err(invalid(format!(
                "store.schema {schema:?} is not a usable schema name"
            )));
        }
        Ok(Config {
            listen,
            tokens,
            targets,
            defaults: file.defaults,
            peak_windows: file.peak_windows,
            metrics_retention_secs: file.limits.metrics_retention_secs,
            shutdown_grace_secs: file.limits.shutdown_grace_secs,
            checkpoint_interval_secs: file.limits.checkpoint_interval_secs,
            store_schema: schema,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:8080"

[api]
token_env = "SHADOWCUT_API_TOKEN"

[targets.default]
host = "127.0.0.1"
port = 3306
user = "shadowcut"
password_env = "SHADOWCUT_DEFAULT_PASSWORD"
"#;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn minimal_file_loads_with_defaults() {
        let env = env_of(&[("SHADOWCUT_DEFAULT_PASSWORD", "s3cret")]);
        let c = Config::from_toml(MINIMAL, Path::new("t.toml"), &env).unwrap();
        assert!(c.tokens.is_empty());
        let t = &c.targets["default"];
        assert_eq!(t.settings.password.as_deref(), Some("s3cret"));
        assert_eq!(t.max_running, 2);
        assert_eq!(c.defaults, MigrationOptions::default());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn env_overrides_and_tokens() {
        let env = env_of(&[
            ("SHADOWCUT_API_TOKEN", "tok"),
            ("SHADOWCUT_LISTEN", "127.0.0.1:9999"),
            ("SHADOWCUT_TARGET_DEFAULT_PORT", "3307"),
        ]);
        let c = Config::from_toml(MINIMAL, Path::new("t.toml"), &env).unwrap();
        assert_eq!(c.tokens, vec!["tok".to_string()]);
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.targets["default"].settings.port, 3307);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = format!("{MINIMAL}\nreplica = \"x\"\n");
        let env = env_of(&[]);
        let e = Config::from_toml(&text, Path::new("t.toml"), &env).unwrap_err();
        assert!(e.to_string().contains("unknown field `replica`"), "{e}");
        let text = "[targets.a]\nhost='h'\nuser='u'\n[defaults]\nchunk_sise = 5\n";
        let e = Config::from_toml(text, Path::new("t.toml"), &env).unwrap_err();
        assert!(e.to_string().contains("chunk_sise"), "{e}");
    }

    const THROTTLED: &str = r#"
[defaults]
chunk_size = 500
max_lag_millis = 3000

[[peak_windows]]
name = "black-friday"
days = ["fri"]
start = "08:00"
end = "20:00"
time_zone = "Europe/Berlin"

[targets.default]
host = "127.0.0.1"
user = "shadowcut"
password_env = "PW"
replicas = ["127.0.0.1:3307", "[::1]:3308", { host = "r3", user = "mon", password_env = "R3_PW" }]
discover_replicas = true
max_lag_millis = 800
max_load = { Threads_running = 25 }
critical_load = { Threads_running = 200 }
critical_load_hits = 5
critical_load_action = "pause"
throttle_query = "SELECT 0"
check_url = "http://127.0.0.1:9/ok"

[[targets.default.peak_windows]]
name = "nightly-batch"
start = "01:00"
end = "03:00"

[targets.default.replica_credentials]
user = "replmon"
password_env = "REPL_PW"

[targets.other]
host = "h2"
user = "u2"
password_env = "PW"
"#;

    #[test]
    fn replicas_throttle_defaults_and_windows() {
        let env = env_of(&[("PW", "pw"), ("REPL_PW", "rpw"), ("R3_PW", "r3pw")]);
        let c = Config::from_toml(THROTTLED, Path::new("t.toml"), &env).unwrap();
        let t = &c.targets["default"];
        let r: Vec<(&str, u16, &str, Option<&str>)> = t
            .replicas
            .iter()
            .map(|r| {
                (
                    r.host.as_str(),
                    r.port,
                    r.user.as_str(),
                    r.password.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            r,
            vec![
                ("127.0.0.1", 3307, "replmon", Some("rpw")),
                ("::1", 3308, "replmon", Some("rpw")),
                ("r3", 3306, "mon", Some("r3pw")),
            ]
        );
        assert!(t.discover_replicas);
        assert_eq!(t.replica_login.user, "replmon");
        // [defaults], then the target's throttle keys over them.
        assert_eq!(t.defaults.chunk_size, 500);
        assert_eq!(t.defaults.max_lag_millis, Some(800));
        assert_eq!(t.defaults.max_load["Threads_running"], 25);
        assert_eq!(t.defaults.critical_load_hits, 5);
        assert_eq!(
            t.defaults.critical_load_action,
            crate::migration::CriticalLoadAction::Pause
        );
        assert_eq!(t.defaults.throttle_query.as_deref(), Some("SELECT 0"));
        let names = |t: &Target| {
            t.peak_windows
                .iter()
                .map(|w| w.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(t), vec!["black-friday", "nightly-batch"]);
        let o = &c.targets["other"];
        assert_eq!(o.defaults.max_lag_millis, Some(3000));
        assert!(o.defaults.max_load.is_empty());
        assert_eq!(names(o), vec!["black-friday"]);
        assert!(o.replicas.is_empty() && !o.discover_replicas);
        assert_eq!(
            (
                o.replica_login.user.as_str(),
                o.replica_login.password.as_deref()
            ),
            ("u2", Some("pw"))
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("rpw") && !shown.contains("r3pw"), "{shown}");
    }

    #[test]
    fn bad_replicas_windows_and_throttle_keys_are_refused() {
        let env = env_of(&[]);
        let load = |extra: &str, target_extra: &str| {
            let text = format!("{extra}\n[targets.a]\nhost = 'h'\nuser = 'u'\n{target_extra}\n");
            Config::from_toml(&text, Path::new("t.toml"), &env)
                .unwrap_err()
                .to_string()
        };
        let cases = [
            ("", "replica = ['h:1']", "unknown field `replica`"),
            ("", "replicas = ['h:port']", "is not a port number"),
            ("", "replicas = ['h:1', 'h:1']", "lists h:1 twice"),
            ("", "replicas = [{ host = 'h', pasword_env = 'X' }]", "unknown field `pasword_env`"),
            ("", "[targets.a.replica_credentials]\nusr = 'x'", "unknown field `usr`"),
            ("", "throttle_query = 'DELETE FROM t'", "targets.a: throttle_query must be"),
            ("", "check_url = 'https://x'", "targets.a: check_url must be"),
            ("", "critical_load_action = 'explode'", "unknown variant `explode`"),
            (
                "",
                "[[targets.a.peak_windows]]\nname = 'w'\nstart = '25:00'\nend = '01:00'",
                "targets.a: peak window w: time \"25:00\" is not HH:MM",
            ),
            (
                "[[peak_windows]]\nname = 'w'\nstart = '01:00'\nend = '02:00'\ntime_zone = 'Mars/Base'",
                "",
                "peak_windows: peak window w: unknown time zone",
            ),
            (
                "[[peak_windows]]\nname = 'w'\nstart = '01:00'\nend = '02:00'\nzone = 'UTC'",
                "",
                "unknown field `zone`",
            ),
        ];
        for (extra, target_extra, expected) in cases {
            let e = load(extra, target_extra);
            assert!(e.contains(expected), "{extra} {target_extra}: {e}");
        }
    }

    /// The example file loads as shipped, and with every commented-out setting turned on
    /// (except the token file and the second target, which name things that do not exist).
    #[test]
    fn example_config_loads_with_and_without_its_comments() {
        let text = include_str!("../../deploy/shadowcut.example.toml");
        let env = env_of(&[]);
        Config::from_toml(text, Path::new("example.toml"), &env).unwrap();
        let mut on = String::new();
        let mut skipping = false;
        for line in text.lines() {
            let setting = line.strip_prefix("# ").filter(|l| {
                l.starts_with('[')
                    || l.starts_with("            {")
                    || l.split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            });
            skipping = match setting {
                Some(l) if l.starts_with('[') => l.contains("reporting"),
                None if line.is_empty() => false,
                _ => skipping,
            };
            match setting {
                Some(l) if !skipping && !l.starts_with("tokens_file") => on.push_str(l),
                _ => on.push_str(line),
            }
            on.push('\n');
        }
        assert!(on.contains("\nreplicas = [") && on.contains("\n[[peak_windows]]"));
        let c = Config::from_toml(&on, Path::new("example.toml"), &env)
            .unwrap_or_else(|e| panic!("{e}\n{on}"));
        let t = &c.targets["default"];
        assert_eq!(t.replicas.len(), 3);
        assert_eq!(t.replica_login.user, "monitor");
        assert_eq!(t.replicas[2].user, "monitor");
        assert!(t.discover_replicas);
        assert_eq!(t.defaults.max_lag_millis, Some(1500));
        assert!(t.defaults.check_url.is_some() && t.defaults.throttle_query.is_some());
        assert_eq!(t.peak_windows.len(), 2);
        assert_eq!(c.targets.len(), 1);
    }
}
