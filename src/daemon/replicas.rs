//! Replicas of a target: the ones its configuration lists and, with `discover_replicas`, the
//! ones the primary knows. Their lag throttles the target's migrations (`max_lag_millis`).
//!
//! A listed replica is `"host:port"` (the target's credentials, or the target's
//! `replica_credentials`) or a table with its own `user` and password. Discovery runs when a
//! migration starts, so a replica added since the daemon started is watched too; a replica the
//! primary reports without a host cannot be watched, and the migration is refused rather than
//! run with a replica nobody checks (fail closed).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Row;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::config::Target;
use crate::conn::ConnSettings;
use crate::inspect;

/// Bound on one discovery (connect, version, list).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One entry of `replicas = [...]`: `"host:port"` or `{host, port, user, password_env, ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// The table form; unknown keys are refused like everywhere else in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaTable {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
}

fn default_port() -> u16 {
    3306
}

/// Parses `host:port`, `host` (port 3306) or `[v6addr]:port`.
pub fn parse_addr(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let bad = |why: &str| format!("replica {s:?}: {why} (write \"host:port\")");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(bad("an IPv6 address needs brackets, as in [::1]:3306"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad(&format!("port {p:?} is not a port number"))),
        },
    };
    Ok((host.to_string(), port))
}

impl<'de> Deserialize<'de> for ReplicaEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ReplicaEntry;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"host:port\" or a table with host, port, user, password_env or password_file",
                )
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ReplicaEntry, E> {
                let (host, port) = parse_addr(s).map_err(E::custom)?;
                Ok(ReplicaEntry {
                    host,
                    port,
                    user: None,
                    password_env: None,
                    password_file: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReplicaEntry, A::Error> {
                // Through the derived table type, so an unknown key is named in the error.
                let t = ReplicaTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ReplicaEntry {
                    host: t.host,
                    port: t.port,
                    user: t.user,
                    password_env: t.password_env,
                    password_file: t.password_file,
                })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

/// User and password for replicas that do not name their own. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Login {
    pub fn at(&self, host: String, port: u16) -> ConnSettings {
        ConnSettings {
            host,
            port,
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

/// The replicas the primary at `primary` reports, logged in as `login`.
pub async fn discover(primary: &ConnSettings, login: &Login) -> Result<Vec<ConnSettings>, String> {
    let work = async {
        let mut conn = primary
            .connect("replica discovery")
            .await
            .map_err(|e| e.to_string())?;
        let version = inspect::server_version(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let sql = version.replica_hosts();
        let rows: Result<Vec<Row>, _> = conn.query(sql.statement).await;
        let _ = conn.disconnect().await;
        let rows = rows.map_err(|e| format!("{}: {e}", sql.statement))?;
        let mut out = Vec::new();
        for row in rows {
            let text = |col: &str| {
                row.get_opt::<Option<String>, _>(col)
                    .and_then(|r| r.ok())
                    .flatten()
                    .unwrap_or_default()
            };
            let (id, host, port) = (
                text(sql.server_id_column),
                text(sql.host_column),
                text(sql.port_column),
            );
            if host.is_empty() {
                return Err(format!(
                    "replica with server_id {id} reports no host: set report_host on it, or \
                     list it under replicas and turn discover_replicas off"
                ));
            }
            let port = port.parse::<u16>().map_err(|_| {
                format!("replica with server_id {id} ({host}) reports port {port:?}")
            })?;
            out.push(login.at(host, port));
        }
        Ok(out)
    };
    match tokio::time::timeout(DISCOVERY_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {DISCOVERY_TIMEOUT:?}")),
    }
}

/// `listed` plus those of `found` at another address.
pub fn merge(listed: &[ConnSettings], found: Vec<ConnSettings>) -> Vec<ConnSettings> {
    let mut out = listed.to_vec();
    for r in found {
        if !out.iter().any(|x| x.host == r.host && x.port == r.port) {
            out.push(r);
        }
    }
    out
}

/// The replicas a migration on `target` watches, discovered now when the target asks for it.
pub async fn for_target(target: &Target) -> Result<Vec<ConnSettings>, String> {
    if !target.discover_replicas {
        return Ok(target.replicas.clone());
    }
    let found = discover(&target.settings, &target.replica_login)
        .await
        .map_err(|e| {
            format!(
                "cannot discover the replicas of target {}: {e}; the migration did not start \
                 (its lag could not be watched)",
                target.name
            )
        })?;
    Ok(merge(&target.replicas, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:3307").unwrap(),
            ("127.0.0.1".into(), 3307)
        );
        assert_eq!(parse_addr("db-2").unwrap(), ("db-2".into(), 3306));
        assert_eq!(parse_addr("[::1]:3308").unwrap(), ("::1".into(), 3308));
        assert_eq!(parse_addr("[::1]").unwrap(), ("::1".into(), 3306));
        for bad in [
            "", ":3306", "h:0", "h:x", "h:70000", "::1:3306", "[::1", "[::1]x",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad:?}");
        }
        assert!(parse_addr("h:x")
            .unwrap_err()
            .contains("\"x\" is not a port"));
    }

    #[derive(Deserialize)]
    struct Doc {
        replicas: Vec<ReplicaEntry>,
    }

    #[test]
    fn entries_as_strings_or_tables() {
        let d: Doc = toml::from_str(
            r#"replicas = ["127.0.0.1:3307", { host = "r2", port = 3308, user = "mon", password_env = "R2_PW" }]"#,
        )
        .unwrap();
        assert_eq!(
            (d.replicas[0].host.as_str(), d.replicas[0].port),
            ("127.0.0.1", 3307)
        );
        assert_eq!(d.replicas[0].user, None);
        assert_eq!(d.replicas[1].user.as_deref(), Some("mon"));
        assert_eq!(d.replicas[1].password_env.as_deref(), Some("R2_PW"));
        let e = toml::from_str::<Doc>(r#"replicas = [{ host = "r", prot = 1 }]"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `prot`"), "{e}");
        let e = toml::from_str::<Doc>(r#"replicas = ["r:x"]"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a port"), "{e}");
        assert!(toml::from_str::<Doc>("replicas = [3307]").is_err());
    }

    #[test]
    fn merge_keeps_listed_first_and_drops_duplicates() {
        let login = Login {
            user: "u".into(),
            password: Some("pw".into()),
        };
        let listed = vec![login.at("a".into(), 1)];
        let merged = merge(
            &listed,
            vec![login.at("a".into(), 1), login.at("b".into(), 2)],
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].host, "b");
        assert!(!format!("{login:?}").contains("pw"));
    }
}
