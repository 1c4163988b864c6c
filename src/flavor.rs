//! Every difference between MySQL and MariaDB lives here, as SQL text and parsing rules.
//!
//! Only MariaDB can run on the development machines, so the MySQL side is written from the
//! documentation and pinned by unit tests of the SQL it produces. Callers ask this module for
//! the statement to run or for the name of the column to read; nothing outside it checks the
//! flavor to build SQL.

use std::fmt;

/// Which server family we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    MariaDb,
    MySql,
}

/// Flavor and version, parsed from `SELECT VERSION()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ServerVersion {
    pub flavor: Flavor,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.flavor {
            Flavor::MariaDb => "MariaDB",
            Flavor::MySql => "MySQL",
        };
        write!(f, "{name} {}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl ServerVersion {
    /// Parses `VERSION()` output such as `10.11.19-MariaDB-0+deb12u1-log` or `8.0.36`.
    pub fn parse(version: &str) -> Option<ServerVersion> {
        let flavor = if version.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        // MariaDB once prefixed versions with "5.5.5-" for old clients.
        let v = version.strip_prefix("5.5.5-").unwrap_or(version);
        let numeric: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(ServerVersion {
            flavor,
            major,
            minor,
            patch,
        })
    }

    fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }

    /// Whether shadowcut supports this server at all (MySQL 8.0+, MariaDB 10.6+).
    pub fn supported(&self) -> bool {
        match self.flavor {
            Flavor::MariaDb => self.at_least(10, 6, 0),
            Flavor::MySql => self.at_least(8, 0, 0),
        }
    }

    /// Statement showing the current binlog file and position (columns `File`, `Position`).
    pub fn binlog_status_sql(&self) -> &'static str {
        match self.flavor {
            Flavor::MariaDb => "SHOW MASTER STATUS",
            // 8.2 added the new name, 8.4 removed the old one.
            Flavor::MySql if self.at_least(8, 2, 0) => "SHOW BINARY LOG STATUS",
            Flavor::MySql => "SHOW MASTER STATUS",
        }
    }

    /// Query returning the server's GTID position as one string column, if it has one.
    pub fn gtid_position_sql(&self) -> &'static str {
        match self.flavor {
            Flavor::MariaDb => "SELECT @@GLOBAL.gtid_binlog_pos",
            Flavor::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// Server variables whose values decide whether row events can be trusted, as
    /// `(variable, required value)`. A missing variable (other flavor) is skipped by the caller.
    pub fn required_binlog_settings(&self) -> Vec<(&'static str, &'static str)> {
        let mut required = vec![
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
        ];
        match self.flavor {
            // Compressed row events decode as nothing: rows would be lost silently.
            Flavor::MariaDb => required.push(("log_bin_compress", "OFF")),
            // Partial JSON updates carry diffs instead of full after images.
            Flavor::MySql => required.push(("binlog_row_value_options", "")),
        }
        required
    }

    /// Statements for the binlog connection before the dump command.
    ///
    /// On MariaDB, capability 4 keeps GTID events as GTID events instead of fake `BEGIN`
    /// queries. `heartbeat_nanos` makes an idle server send heartbeats, so a dead link is
    /// noticed.
    pub fn binlog_session_setup(&self, heartbeat_nanos: u64) -> Vec<String> {
        let mut stmts = vec![format!("SET @master_heartbeat_period = {heartbeat_nanos}")];
        if self.flavor == Flavor::MariaDb {
            stmts.push("SET @mariadb_slave_capability = 4".to_string());
        }
        stmts
    }

    /// Statement bounding how long any one statement of this session may run.
    pub fn statement_timeout_sql(&self, seconds: u64) -> String {
        match self.flavor {
            Flavor::MariaDb => format!("SET SESSION max_statement_time = {seconds}"),
            // MySQL's limit applies to SELECT only and is in milliseconds.
            Flavor::MySql => format!("SET SESSION max_execution_time = {}", seconds * 1000),
        }
    }

    /// Statement showing replica status, and the names of its lag and SQL-thread columns.
    pub fn replica_status(&self) -> ReplicaStatusSql {
        match self.flavor {
            // MariaDB keeps the SLAVE column names even for SHOW REPLICA STATUS.
            Flavor::MariaDb => ReplicaStatusSql {
                statement: "SHOW SLAVE STATUS",
                lag_column: "Seconds_Behind_Master",
                sql_running_column: "Slave_SQL_Running",
                io_running_column: "Slave_IO_Running",
            },
            Flavor::MySql if self.at_least(8, 0, 22) => ReplicaStatusSql {
                statement: "SHOW REPLICA STATUS",
                lag_column: "Seconds_Behind_Source",
                sql_running_column: "Replica_SQL_Running",
                io_running_column: "Replica_IO_Running",
            },
            Flavor::MySql => ReplicaStatusSql {
                statement: "SHOW SLAVE STATUS",
                lag_column: "Seconds_Behind_Master",
                sql_running_column: "Slave_SQL_Running",
                io_running_column: "Slave_IO_Running",
            },
        }
    }

    /// Statement listing the replicas registered with this primary, and its column names.
    /// A replica shows the host it reports (`report_host`); without one the server shows the
    /// address it connected from, or nothing (MySQL).
    pub fn replica_hosts(&self) -> ReplicaHostsSql {
        match self.flavor {
            Flavor::MariaDb => ReplicaHostsSql {
                statement: "SHOW SLAVE HOSTS",
                server_id_column: "Server_id",
                host_column: "Host",
                port_column: "Port",
            },
            // 8.0.22 renamed the statement and its columns; 8.4 removed the old name.
            Flavor::MySql if self.at_least(8, 0, 22) => ReplicaHostsSql {
                statement: "SHOW REPLICAS",
                server_id_column: "Server_Id",
                host_column: "Host",
                port_column: "Port",
            },
            Flavor::MySql => ReplicaHostsSql {
                statement: "SHOW SLAVE HOSTS",
                server_id_column: "Server_id",
                host_column: "Host",
                port_column: "Port",
            },
        }
    }

    /// Whether `RENAME TABLE` may run in the session that holds `LOCK TABLES` (MySQL 8.0.13+).
    /// MariaDB refuses it (ERROR 1192), so the cut-over uses two sessions there.
    pub fn rename_under_lock_tables(&self) -> bool {
        self.flavor == Flavor::MySql && self.at_least(8, 0, 13)
    }

    /// Whether MariaDB's GTID event (type 162) is in the stream instead of MySQL's (type 33).
    pub fn mariadb_gtids(&self) -> bool {
        self.flavor == Flavor::MariaDb
    }
}

/// Names needed to read replica status on this flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatusSql {
    pub statement: &'static str,
    pub lag_column: &'static str,
    pub sql_running_column: &'static str,
    pub io_running_column: &'static str,
}

/// Names needed to list a primary's replicas on this flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaHostsSql {
    pub statement: &'static str,
    pub server_id_column: &'static str,
    pub host_column: &'static str,
    pub port_column: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ServerVersion {
        ServerVersion::parse(s).expect("test versions parse")
    }

    #[test]
    fn parses_versions() {
        let m = v("10.11.19-MariaDB-0+deb12u1-log");
        assert_eq!(
            (m.flavor, m.major, m.minor, m.patch),
            (Flavor::MariaDb, 10, 11, 19)
        );
        let m = v("5.5.5-10.6.12-MariaDB");
        assert_eq!((m.flavor, m.major, m.minor), (Flavor::MariaDb, 10, 6));
        let y = v("8.0.36-0ubuntu0.22.04.1");
        assert_eq!(
            (y.flavor, y.major, y.minor, y.patch),
            (Flavor::MySql, 8, 0, 36)
        );
        assert!(v("8.4.2").supported());
        assert!(!v("5.7.44-log").supported());
        assert!(!v("10.5.1-MariaDB").supported());
        assert!(ServerVersion::parse("garbage").is_none());
    }

    #[test]
    fn binlog_status_statement_per_flavor() {
        assert_eq!(
            v("10.11.5-MariaDB").binlog_status_sql(),
            "SHOW MASTER STATUS"
        );
        assert_eq!(v("8.0.36").binlog_status_sql(), "SHOW MASTER STATUS");
        assert_eq!(v("8.4.0").binlog_status_sql(), "SHOW BINARY LOG STATUS");
        assert_eq!(
            v("10.11.5-MariaDB").gtid_position_sql(),
            "SELECT @@GLOBAL.gtid_binlog_pos"
        );
        assert_eq!(
            v("8.4.0").gtid_position_sql(),
            "SELECT @@GLOBAL.gtid_executed"
        );
    }

    #[test]
    fn required_settings_per_flavor() {
        let maria = v("10.11.5-MariaDB").required_binlog_settings();
        assert!(maria.contains(&("log_bin_compress", "OFF")));
        assert!(!maria.iter().any(|(n, _)| *n == "binlog_row_value_options"));
        let mysql = v("8.0.36").required_binlog_settings();
        assert!(mysql.contains(&("binlog_row_value_options", "")));
        assert!(mysql.contains(&("binlog_row_image", "FULL")));
    }

    #[test]
    fn session_and_timeouts_per_flavor() {
        let maria = v("10.11.5-MariaDB");
        let mysql = v("8.0.36");
        assert_eq!(
            maria.binlog_session_setup(1_000_000_000),
            vec![
                "SET @master_heartbeat_period = 1000000000".to_string(),
                "SET @mariadb_slave_capability = 4".to_string()
            ]
        );
        assert_eq!(mysql.binlog_session_setup(5).len(), 1);
        assert_eq!(
            maria.statement_timeout_sql(3),
            "SET SESSION max_statement_time = 3"
        );
        assert_eq!(
            mysql.statement_timeout_sql(3),
            "SET SESSION max_execution_time = 3000"
        );
        assert!(!maria.rename_under_lock_tables());
        assert!(mysql.rename_under_lock_tables());
        assert!(!v("8.0.12").rename_under_lock_tables());
    }

    #[test]
    fn replica_status_columns_per_flavor() {
        assert_eq!(
            v("10.11.5-MariaDB").replica_status().lag_column,
            "Seconds_Behind_Master"
        );
        assert_eq!(
            v("8.0.22").replica_status().lag_column,
            "Seconds_Behind_Source"
        );
        assert_eq!(v("8.4.0").replica_status().statement, "SHOW REPLICA STATUS");
        assert_eq!(v("8.0.21").replica_status().statement, "SHOW SLAVE STATUS");
    }

    #[test]
    fn replica_hosts_statement_per_flavor() {
        let maria = v("10.11.5-MariaDB").replica_hosts();
        assert_eq!(maria.statement, "SHOW SLAVE HOSTS");
        assert_eq!(
            (maria.server_id_column, maria.host_column, maria.port_column),
            ("Server_id", "Host", "Port")
        );
        let mysql = v("8.0.36").replica_hosts();
        assert_eq!(mysql.statement, "SHOW REPLICAS");
        assert_eq!(mysql.server_id_column, "Server_Id");
        assert_eq!(v("8.4.0").replica_hosts().statement, "SHOW REPLICAS");
        assert_eq!(v("8.0.21").replica_hosts().statement, "SHOW SLAVE HOSTS");
    }
}
