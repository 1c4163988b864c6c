//! Operator-defined checks: a throttle query (a non-zero first value throttles) and an HTTP
//! check URL (anything but a 2xx answer in time throttles).
//!
//! The query is operator configuration, not application input: it must be one SELECT, and it
//! runs in its own read-only session with a statement timeout.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

/// How long a check may take before it counts as failed (and throttles).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Refuses anything but a single SELECT.
pub fn validate_query(sql: &str) -> Result<(), String> {
    let t = sql.trim();
    let starts_select = t.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("select"));
    if !starts_select || t.contains(';') {
        return Err("throttle_query must be a single SELECT statement without ';'".to_string());
    }
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::NULL => false,
        Value::Int(i) => *i != 0,
        Value::UInt(u) => *u != 0,
        Value::Float(f) => *f != 0.0,
        Value::Double(f) => *f != 0.0,
        Value::Bytes(b) => {
            let s = String::from_utf8_lossy(b);
            s.trim()
                .parse::<f64>()
                .map(|f| f != 0.0)
                .unwrap_or(!s.trim().is_empty())
        }
        _ => true,
    }
}

/// A value as the operator would write it (the text protocol returns numbers as bytes).
fn plain(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.as_sql(true),
    }
}

/// Runs the throttle query; `Some(reason)` when it asks to throttle or fails.
pub async fn query_verdict(conn: &mut Conn, sql: &str) -> Option<String> {
    match tokio::time::timeout(CHECK_TIMEOUT, conn.query_first::<mysql_async::Row, _>(sql)).await {
        Ok(Ok(Some(row))) => match row.as_ref(0) {
            Some(v) if truthy(v) => Some(format!("throttle query returned {}", plain(v))),
            _ => None,
        },
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(format!("throttle query failed: {e}")),
        Err(_) => Some(format!("throttle query took longer than {CHECK_TIMEOUT:?}")),
    }
}

/// GETs the check URL (plain http); `Some(reason)` unless it answers 2xx in time.
pub async fn url_verdict(url: &str) -> Option<String> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("check URL {url:?} is invalid: {e}")),
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(CHECK_TIMEOUT, client.get(uri)).await {
        Ok(Ok(resp)) if resp.status().is_success() => None,
        Ok(Ok(resp)) => Some(format!("check URL answered {}", resp.status())),
        Ok(Err(e)) => Some(format!("check URL unreachable: {e}")),
        Err(_) => Some(format!("check URL did not answer within {CHECK_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_selects_pass() {
        assert!(validate_query("SELECT COUNT(*) > 5 FROM information_schema.PROCESSLIST").is_ok());
        assert!(validate_query("select 1").is_ok());
        assert!(validate_query("SELECT 1; DROP TABLE t").is_err());
        assert!(validate_query("DELETE FROM t").is_err());
        assert!(truthy(&Value::Int(3)) && !truthy(&Value::Int(0)) && !truthy(&Value::NULL));
        assert!(!truthy(&Value::Bytes(b"0".to_vec())) && truthy(&Value::Bytes(b"1.5".to_vec())));
    }
}
