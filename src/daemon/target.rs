//! One `[targets.NAME]` section: where the server is and who we are there, its replicas, and
//! the throttle settings its migrations start with.
//!
//! Throttle keys under a target (`max_lag_millis`, `max_load`, `critical_load`,
//! `critical_load_hits`, `critical_load_action`, `throttle_query`, `check_url`) seed the options
//! of every migration on it, over `[defaults]`; a start request still overrides them key by
//! key. Peak windows are different: the daemon-wide `[[peak_windows]]` and the target's own
//! apply to every migration on the target, in addition to the migration's `peak_windows`, so a
//! request cannot opt out of a window the operators configured.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::config::{ConfigError, EnvLookup};
use super::replicas::{Login, ReplicaEntry};
use crate::conn::ConnSettings;
use crate::migration::{CriticalLoadAction, MigrationOptions};
use crate::throttle::PeakWindow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetSection {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    user: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// Overrides `limits.max_running_per_target` for this target.
    max_running: Option<usize>,
    /// `["host:port", ...]` or tables with their own credentials.
    #[serde(default)]
    replicas: Vec<ReplicaEntry>,
    /// Credentials of replicas that do not name their own (default: the target's).
    replica_credentials: Option<CredentialsSection>,
    /// Also watch the replicas the primary reports (`SHOW SLAVE HOSTS` / `SHOW REPLICAS`).
    #[serde(default)]
    discover_replicas: bool,
    max_lag_millis: Option<u64>,
    max_load: Option<BTreeMap<String, u64>>,
    critical_load: Option<BTreeMap<String, u64>>,
    critical_load_hits: Option<u32>,
    critical_load_action: Option<CriticalLoadAction>,
    throttle_query: Option<String>,
    check_url: Option<String>,
    #[serde(default)]
    peak_windows: Vec<PeakWindow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsSection {
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
}

fn default_port() -> u16 {
    3306
}

/// One MySQL/MariaDB server migrations run against.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub settings: ConnSettings,
    pub max_running: usize,
    /// Replicas listed in the configuration, with their credentials.
    pub replicas: Vec<ConnSettings>,
    /// Whether a migration also watches the replicas the primary reports when it starts.
    pub discover_replicas: bool,
    /// Credentials of discovered replicas.
    pub replica_login: Login,
    /// `[defaults]` with this target's throttle keys over them: a migration's starting options.
    pub defaults: MigrationOptions,
    /// The daemon-wide peak windows, then the target's: they apply to all its migrations.
    pub peak_windows: Vec<PeakWindow>,
}

/// What building a target needs from the rest of the file.
pub(super) struct Context<'a> {
    pub env: EnvLookup<'a>,
    pub invalid: &'a dyn Fn(String) -> ConfigError,
    pub max_running: usize,
    pub defaults: &'a MigrationOptions,
    pub peak_windows: &'a [PeakWindow],
}

/// `SHADOWCUT_TARGET_<NAME>_<FIELD>`, NAME upper-cased with `-` as `_`.
fn target_env(name: &str, field: &str) -> String {
    format!(
        "SHADOWCUT_TARGET_{}_{field}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// A password named by a variable or a file (not both); `None` when neither is given.
fn secret(
    what: &str,
    var: Option<&String>,
    file: Option<&PathBuf>,
    ctx: &Context<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    match (var, file) {
        (Some(_), Some(_)) => Err((ctx.invalid)(format!(
            "{what}: set password_env or password_file, not both"
        ))),
        (Some(var), None) => match (ctx.env)(var) {
            Some(p) if !p.is_empty() => Ok(Some(p)),
            _ => {
                warnings.push(format!(
                    "{what}: {var} is not set; connecting without a password"
                ));
                Ok(None)
            }
        },
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        (None, None) => Ok(None),
    }
}

impl TargetSection {
    pub(super) fn build(
        self,
        name: String,
        ctx: &Context<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<Target, ConfigError> {
        let invalid = ctx.invalid;
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
        let host = (ctx.env)(&target_env(&name, "HOST")).unwrap_or(self.host);
        let port = match (ctx.env)(&target_env(&name, "PORT")) {
            Some(p) => p.parse().map_err(|_| {
                invalid(format!("{}={p:?} is not a port", target_env(&name, "PORT")))
            })?,
            None => self.port,
        };
        let user = (ctx.env)(&target_env(&name, "USER")).unwrap_or(self.user);
        let what = format!("targets.{name}");
        let password = secret(
            &what,
            self.password_env.as_ref(),
            self.password_file.as_ref(),
            ctx,
            warnings,
        )?;
        let limit = self.max_running.unwrap_or(ctx.max_running);
        if limit == 0 {
            return Err(invalid(format!("{what}.max_running must be at least 1")));
        }

        let replica_login = match &self.replica_credentials {
            None => Login {
                user: user.clone(),
                password: password.clone(),
            },
            Some(c) => Login {
                user: c.user.clone().unwrap_or_else(|| user.clone()),
                password: match (&c.password_env, &c.password_file) {
                    (None, None) => password.clone(),
                    (v, f) => secret(
                        &format!("{what}.replica_credentials"),
                        v.as_ref(),
                        f.as_ref(),
                        ctx,
                        warnings,
                    )?,
                },
            },
        };
        let mut replicas: Vec<ConnSettings> = Vec::new();
        for r in self.replicas {
            if replicas
                .iter()
                .any(|x| x.host == r.host && x.port == r.port)
            {
                return Err(invalid(format!(
                    "{what}.replicas lists {}:{} twice",
                    r.host, r.port
                )));
            }
            let user = r.user.unwrap_or_else(|| replica_login.user.clone());
            let password = match (&r.password_env, &r.password_file) {
                (None, None) => replica_login.password.clone(),
                (v, f) => secret(
                    &format!("{what}.replicas {}:{}", r.host, r.port),
                    v.as_ref(),
                    f.as_ref(),
                    ctx,
                    warnings,
                )?,
            };
            replicas.push(ConnSettings {
                host: r.host,
                port: r.port,
                user,
                password,
            });
        }

        let mut defaults = ctx.defaults.clone();
        if let Some(v) = self.max_lag_millis {
            defaults.max_lag_millis = Some(v);
        }
        if let Some(v) = self.max_load {
            defaults.max_load = v;
        }
        if let Some(v) = self.critical_load {
            defaults.critical_load = v;
        }
        if let Some(v) = self.critical_load_hits {
            defaults.critical_load_hits = v;
        }
        if let Some(v) = self.critical_load_action {
            defaults.critical_load_action = v;
        }
        if let Some(v) = self.throttle_query {
            defaults.throttle_query = Some(v);
        }
        if let Some(v) = self.check_url {
            defaults.check_url = Some(v);
        }
        defaults
            .validate()
            .map_err(|e| invalid(format!("{what}: {e}")))?;
        for w in &self.peak_windows {
            w.validate().map_err(|e| invalid(format!("{what}: {e}")))?;
        }
        if defaults.max_lag_millis.is_none() && (!replicas.is_empty() || self.discover_replicas) {
            warnings.push(format!(
                "{what}: replicas are configured but max_lag_millis is not set: their lag is \
                 not watched until a migration sets it"
            ));
        }
        let mut peak_windows = ctx.peak_windows.to_vec();
        peak_windows.extend(self.peak_windows);

        Ok(Target {
            name,
            settings: ConnSettings {
                host,
                port,
                user,
                password,
            },
            max_running: limit,
            replicas,
            discover_replicas: self.discover_replicas,
            replica_login,
            defaults,
            peak_windows,
        })
    }
}
