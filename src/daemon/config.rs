//! The daemon's configuration: a TOML file, then environment overrides, then validation.
//!
//! Invariants: unknown keys are refused with the key's name and position (a typo must never be
//! silently ignored, since a later release gives meaning to more keys: `replicas` under a
//! target, peak-window schedules, throttle checks); secrets (database passwords, API tokens) are
//! only ever named in the file (an environment variable or a file holding them), read once at
//! load, and never printed: [`Config`]'s `Debug` shows them redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::conn::ConnSettings;
use crate::migration::MigrationOptions;

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
#[serde(deny_unknown_fields)]
struct TargetSection {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    user: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// Overrides `limits.max_running_per_target` for this target.
    max_running: Option<usize>,
}

fn default_port() -> u16 {
    3306
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSection {
    max_running_per_target: usize,
    /// Seconds a finished migration's metric series are kept before they are dropped.
    metrics_retention_secs: u64,
    /// Seconds a shutdown waits for migrations to reach a safe point.
    shutdown_grace_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_running_per_target: 2,
            metrics_retention_secs: 3600,
            shutdown_grace_secs: 10,
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

/// One MySQL/MariaDB server migrations run against.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub settings: ConnSettings,
    pub max_running: usize,
}

/// The loaded, validated configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// API tokens; empty means authentication is off.
    pub tokens: Vec<String>,
    pub targets: BTreeMap<String, Target>,
    pub defaults: MigrationOptions,
    pub metrics_retention_secs: u64,
    pub shutdown_grace_secs: u64,
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
            .field("metrics_retention_secs", &self.metrics_retention_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("store_schema", &self.store_schema)
            .finish()
    }
}

/// Environment variables that override the file (documented in the example config).
pub const ENV_LISTEN: &str = "SHADOWCUT_LISTEN";
pub const ENV_MAX_RUNNING: &str = "SHADOWCUT_MAX_RUNNING_PER_TARGET";

/// `SHADOWCUT_TARGET_<NAME>_<FIELD>`, NAME upper-cased with `-` as `_`.
fn target_env(name: &str, field: &str) -> String {
    format!(
        "SHADOWCUT_TARGET_{}_{field}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

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
        let mut targets = BTreeMap::new();
        for (name, t) in file.targets {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(format!(
                    "target name {name:?}: use 1 to 64 letters, digits, '_' or '-'"
                )));
            }
            let host = env(&target_env(&name, "HOST")).unwrap_or(t.host);
            let port = match env(&target_env(&name, "PORT")) {
                Some(p) => p.parse().map_err(|_| {
                    invalid(format!("{}={p:?} is not a port", target_env(&name, "PORT")))
                })?,
                None => t.port,
            };
            let user = env(&target_env(&name, "USER")).unwrap_or(t.user);
            let password = match (&t.password_env, &t.password_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "targets.{name}: set password_env or password_file, not both"
                    )))
                }
                (Some(var), None) => match env(var) {
                    Some(p) if !p.is_empty() => Some(p),
                    _ => {
                        warnings.push(format!(
                            "targets.{name}: {var} is not set; connecting without a password"
                        ));
                        None
                    }
                },
                (None, Some(p)) => {
                    let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                        path: p.clone(),
                        source,
                    })?;
                    Some(text.trim_end_matches(['\n', '\r']).to_string())
                }
                (None, None) => None,
            };
            let limit = t.max_running.unwrap_or(max_running);
            if limit == 0 {
                return Err(invalid(format!(
                    "targets.{name}.max_running must be at least 1"
                )));
            }
            targets.insert(
                name.clone(),
                Target {
                    name,
                    settings: ConnSettings {
                        host,
                        port,
                        user,
                        password,
                    },
                    max_running: limit,
                },
            );
        }

        file.defaults
            .validate()
            .map_err(|e| invalid(format!("defaults: {e}")))?;
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
            metrics_retention_secs: file.limits.metrics_retention_secs,
            shutdown_grace_secs: file.limits.shutdown_grace_secs,
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
}
