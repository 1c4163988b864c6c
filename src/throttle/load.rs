//! Server load: global status counters compared with thresholds (`Threads_running=25`).

use std::collections::{BTreeMap, HashMap};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Current values of the numeric global status variables. Names are matched client-side, so
/// no configured name ever reaches SQL.
pub async fn global_status(conn: &mut Conn) -> Result<HashMap<String, u64>, mysql_async::Error> {
    let rows: Vec<(String, String)> = conn.query("SHOW GLOBAL STATUS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, value)| value.parse().ok().map(|v| (name.to_ascii_lowercase(), v)))
        .collect())
}

/// Every threshold met or exceeded, as `Name=value (max N)`. An unknown variable counts as
/// exceeded (fail closed) so a typo cannot disable the guard.
pub fn exceeded(values: &HashMap<String, u64>, thresholds: &BTreeMap<String, u64>) -> Vec<String> {
    thresholds
        .iter()
        .filter_map(|(name, max)| match values.get(&name.to_ascii_lowercase()) {
            Some(v) if v >= max => Some(format!("{name}={v} (max {max})")),
            Some(_) => None,
            None => Some(format!(
                "{name} is not a global status variable of this server"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_compare_case_insensitively_and_fail_closed() {
        let values: HashMap<String, u64> = [("threads_running".to_string(), 30)].into();
        let t = |n: &str, v: u64| BTreeMap::from([(n.to_string(), v)]);
        assert_eq!(
            exceeded(&values, &t("Threads_running", 25)),
            vec!["Threads_running=30 (max 25)"]
        );
        assert!(exceeded(&values, &t("Threads_running", 31)).is_empty());
        assert!(
            exceeded(&values, &t("Thread_runing", 5))[0].contains("not a global status variable")
        );
    }
}
