//! The daemon's HTTP contract against the real process: the OpenAPI document matches the
//! router, every error status with its body, authentication, idempotency keys, live options,
//! the global throttle's endpoints, and configuration refusals.

mod common;
mod daemon_support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::{dump, Db};
use daemon_support::{config_text, Daemon};
use serde_json::{json, Value};
use shadowcut::daemon::api::ROUTES;
use shadowcut::daemon::model::rfc3339;

/// (METHOD, path) pairs under `paths:` in docs/openapi.yaml (written two-space indented).
fn spec_routes() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .expect("docs/openapi.yaml");
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            if !p.starts_with(' ') {
                path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
                continue;
            }
        }
        let method = line
            .strip_prefix("    ")
            .map(|m| m.trim_end().trim_end_matches(':'));
        if let (Some(m), Some(p)) = (method, &path) {
            if ["get", "post", "put", "patch", "delete"].contains(&m) {
                out.insert((m.to_uppercase(), p.clone()));
            }
        }
    }
    out
}

#[test]
fn openapi_documents_every_route_and_only_those() {
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let spec = spec_routes();
    assert_eq!(routes.len(), 15);
    let missing: Vec<_> = routes.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes not in docs/openapi.yaml: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[test]
fn unknown_config_keys_and_missing_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowcut"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&format!(
        "{}\n[targets.default.extra]\nx = 1\n",
        config_text(1, "")
    ));
    assert!(err.contains("unknown field `extra`"), "{err}");
    let err = run(&config_text(1, "[limits]\nmax_runing_per_target = 3"));
    assert!(
        err.contains("unknown field `max_runing_per_target`"),
        "{err}"
    );
    let err = run("listen = \"127.0.0.1:0\"\n");
    assert!(err.contains("no target"), "{err}");
}

async fn error_of(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let (status, v) = d.call(method, path, body).await;
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no error body: {v}"))
        .to_string();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    (status, code, v)
}

#[tokio::test]
async fn errors_auth_idempotency_options_and_throttle() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    db.exec(
        "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, k INT NOT NULL, c VARCHAR(20))",
    )
    .await;
    db.exec("INSERT INTO app.t (k, c) SELECT seq, CONCAT('r', seq) FROM app.seq_1_to_3000")
        .await;
    db.exec("CREATE TABLE app.trig (id INT PRIMARY KEY, v INT)")
        .await;
    db.exec("CREATE TRIGGER app.trig_ai AFTER INSERT ON app.trig FOR EACH ROW SET @x = 1")
        .await;
    db.exec("CREATE TABLE app.nokey (v INT)").await;
    db.exec("CREATE TABLE app.u (id INT PRIMARY KEY, v INT)")
        .await;
    db.exec("INSERT INTO app.u SELECT seq, seq FROM app.seq_1_to_100")
        .await;
    let before = dump(&db, "app.t", &["id", "k", "c"], "id").await;
    let d = Daemon::start(
        &config_text(db.sandbox.port(), "[limits]\nmetrics_retention_secs = 2"),
        Some("s3cret-token"),
    );

    // Open routes need no token; the rest do.
    let (s, v) = d.call_with("GET", "/healthz", None, None, &[]).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = d.call_with("GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["targets"]["default"]["ready"], true);
    assert!(d
        .metrics()
        .await
        .contains("shadowcut_migrations{state=\"running\"} 0"));
    for token in [None, Some("wrong")] {
        let (s, v) = d.call_with("GET", "/v1/migrations", None, token, &[]).await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    let (s, _) = d
        .call_with(
            "POST",
            "/v1/throttle",
            Some(json!({"reason": "x"})),
            Some("wrong"),
            &[],
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(
        d.call("GET", "/v1/throttle", None).await.1["active"],
        false,
        "the refused request changed nothing"
    );

    // Every documented route is routed (an unknown path gets the fallback's code).
    for (method, path) in ROUTES {
        let path = path.replace("{id}", "mig_none");
        let (_, v) = d.call(method, &path, None).await;
        assert_ne!(v["error"]["code"], "no_such_route", "{method} {path}");
    }
    let (s, code, _) = error_of(&d, "GET", "/v1/nothing", None).await;
    assert_eq!((s, code.as_str()), (404, "no_such_route"));

    // 400s.
    let (s, v) = d
        .raw(
            "POST",
            "/v1/migrations",
            "{not json".into(),
            d.token.as_deref(),
            &[],
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, code, _) = error_of(
        &d,
        "POST",
        "/v1/migrations",
        Some(json!({"database": "app", "table": "t"})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_request"));
    let (s, code, v) = error_of(&d, "POST", "/v1/migrations", Some(json!({"database": "app", "table": "t", "alter": "ADD COLUMN x INT", "options": {"chunk_sise": 5}}))).await;
    assert_eq!((s, code.as_str()), (400, "invalid_options"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chunk_sise"),
        "{v}"
    );
    let (s, code, _) = error_of(&d, "POST", "/v1/migrations", Some(json!({"database": "app", "table": "t", "alter": "ADD COLUMN x INT", "options": {"chunk_size": 0}}))).await;
    assert_eq!((s, code.as_str()), (400, "invalid_options"));
    let (s, code, _) = error_of(
        &d,
        "POST",
        "/v1/migrations",
        Some(
            json!({"database": "app", "table": "t", "alter": "ADD COLUMN x INT; DROP TABLE app.u"}),
        ),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_alter"));
    let (s, code, v) = error_of(
        &d,
        "POST",
        "/v1/migrations",
        Some(json!({"database": "app", "table": "t", "alter": "ADD COLUMN x INTT"})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "alter_rejected"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("INTT"),
        "MySQL's message: {v}"
    );
    let (s, code, _) = error_of(&d, "GET", "/v1/migrations?state=bogus", None).await;
    assert_eq!((s, code.as_str()), (400, "invalid_request"));

    // 404s.
    let (s, code, _) = error_of(
        &d,
        "POST",
        "/v1/migrations",
        Some(json!({"database": "app", "table": "missing", "alter": "ADD COLUMN x INT"})),
    )
    .await;
    assert_eq!((s, code.as_str()), (404, "table_not_found"));
    let (s, code, _) = error_of(&d, "POST", "/v1/migrations", Some(json!({"target": "elsewhere", "database": "app", "table": "t", "alter": "ADD COLUMN x INT"}))).await;
    assert_eq!((s, code.as_str()), (404, "target_not_found"));
    let (s, code, _) = error_of(&d, "GET", "/v1/migrations/mig_none", None).await;
    assert_eq!((s, code.as_str()), (404, "migration_not_found"));
    let (s, code, _) = error_of(&d, "POST", "/v1/migrations/mig_none/pause", None).await;
    assert_eq!((s, code.as_str()), (404, "migration_not_found"));

    // 422s name the failed check.
    let (s, code, v) = error_of(
        &d,
        "POST",
        "/v1/migrations",
        Some(json!({"database": "app", "table": "trig", "alter": "ADD COLUMN x INT"})),
    )
    .await;
    assert_eq!(
        (s, code.as_str(), v["error"]["check"].as_str()),
        (422, "precondition_failed", Some("triggers")),
        "{v}"
    );
    let (s, code, v) = error_of(
        &d,
        "POST",
        "/v1/migrations",
        Some(json!({"database": "app", "table": "nokey", "alter": "ADD COLUMN x INT"})),
    )
    .await;
    assert_eq!(
        (s, code.as_str(), v["error"]["check"].as_str()),
        (422, "precondition_failed", Some("shared_key")),
        "{v}"
    );
    // Refused requests left nothing behind.
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(tables, vec!["nokey", "t", "trig", "u"]);

    // Idempotency: same key and body -> the same migration; another body -> 422.
    let body = json!({"database": "app", "table": "t", "alter": "ADD COLUMN c2 INT NOT NULL DEFAULT 5",
                      "options": {"postpone_cutover": true, "chunk_size": 1000}});
    let key = [("idempotency-key", "deploy-42")];
    let (s, first) = d
        .call_with(
            "POST",
            "/v1/migrations",
            Some(body.clone()),
            d.token.as_deref(),
            &key,
        )
        .await;
    assert_eq!(s, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["options"]["postpone_cutover"], true);
    assert_eq!(
        first["options"]["keep_old_table"], true,
        "defaults fill the rest"
    );
    let (s, again) = d
        .call_with(
            "POST",
            "/v1/migrations",
            Some(body.clone()),
            d.token.as_deref(),
            &key,
        )
        .await;
    assert_eq!(
        (s, again["id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    let mut other = body.clone();
    other["alter"] = json!("ADD COLUMN c3 INT");
    let (s, v) = d
        .call_with(
            "POST",
            "/v1/migrations",
            Some(other),
            d.token.as_deref(),
            &key,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{v}"
    );

    // 409: the table is busy (without a key, the same body is a new request).
    let (s, code, v) = error_of(&d, "POST", "/v1/migrations", Some(body.clone())).await;
    assert_eq!(
        (s, code.as_str(), v["error"]["migration_id"].as_str()),
        (409, "table_busy", Some(id.as_str()))
    );
    let v = d.wait_state(&id, "postponed", 60).await;
    assert_eq!(v["rows_copied"], 3000);
    assert_eq!(v["step"], "waiting_for_cutover");

    // Live options: in the view at once; others refused while it runs.
    let (s, v) = d.call("PATCH", &format!("/v1/migrations/{id}"), Some(json!({"chunk_size": 250, "nice_percent": 150, "max_lag_millis": 1500, "max_load": {"Threads_running": 25}}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["options"]["chunk_size"].as_u64(),
            v["options"]["nice_percent"].as_u64(),
            v["options"]["max_lag_millis"].as_u64()
        ),
        (Some(250), Some(150), Some(1500))
    );
    assert_eq!(v["options"]["max_load"]["Threads_running"], 25);
    let (s, code, _) = error_of(
        &d,
        "PATCH",
        &format!("/v1/migrations/{id}"),
        Some(json!({"keep_old_table": false})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_options"));
    let (s, code, _) = error_of(
        &d,
        "PATCH",
        &format!("/v1/migrations/{id}"),
        Some(json!({"chunk_size": 0})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_options"));
    let (s, code, msg) = error_of(
        &d,
        "PATCH",
        &format!("/v1/migrations/{id}"),
        Some(json!({"nice_percent": 20_000})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_options"));
    assert!(msg.to_string().contains("nice_percent"), "{msg}");

    // Cancel the postponed migration: the table is as it was, the helpers are gone.
    let (s, v) = d
        .call("POST", &format!("/v1/migrations/{id}/cancel"), None)
        .await;
    assert_eq!(
        (s, v["cancel_requested"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    let v = d.wait_state(&id, "cancelled", 30).await;
    assert!(v["finished_at"].is_string());
    assert_eq!(dump(&db, "app.t", &["id", "k", "c"], "id").await, before);
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(tables, vec!["nokey", "t", "trig", "u"]);
    // 409: actions that do not fit a finished migration.
    for action in ["pause", "resume", "cutover", "cancel"] {
        let (s, code, _) =
            error_of(&d, "POST", &format!("/v1/migrations/{id}/{action}"), None).await;
        assert_eq!((s, code.as_str()), (409, "wrong_state"), "{action}");
    }
    let (s, code, _) = error_of(
        &d,
        "PATCH",
        &format!("/v1/migrations/{id}"),
        Some(json!({"chunk_size": 9})),
    )
    .await;
    assert_eq!((s, code.as_str()), (409, "wrong_state"));

    // A migration that cuts over by itself refuses /cutover; it completes with defaults.
    let id2 = d.start_migration(json!({"database": "app", "table": "u", "alter": "ADD COLUMN w INT NOT NULL DEFAULT 3"})).await;
    let (s, code, _) = error_of(&d, "POST", &format!("/v1/migrations/{id2}/cutover"), None).await;
    assert_eq!((s, code.as_str()), (409, "wrong_state"));
    let v = d.wait_state(&id2, "completed", 60).await;
    assert_eq!(v["progress"], 100.0);
    assert!(
        v["old_table"].as_str().unwrap().starts_with("_u_old_"),
        "{v}"
    );
    assert_eq!(db.scalar_u64("SELECT SUM(w) FROM app.u").await, 300);

    // Filters.
    let (_, v) = d.call("GET", "/v1/migrations?state=completed", None).await;
    let ids: Vec<&str> = v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id2.as_str()]);
    let (_, v) = d
        .call("GET", "/v1/migrations?database=app&table=t", None)
        .await;
    assert_eq!(v["migrations"].as_array().unwrap().len(), 1);
    assert_eq!(v["migrations"][0]["state"], "cancelled");

    // The global throttle: on with an end, shown, lifted by itself; past ends refused.
    let past = rfc3339(SystemTime::now() - Duration::from_secs(60));
    let (s, code, _) = error_of(
        &d,
        "POST",
        "/v1/throttle",
        Some(json!({"reason": "peak", "until": past})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_request"));
    let (s, code, _) = error_of(
        &d,
        "POST",
        "/v1/throttle",
        Some(json!({"reason": "peak", "until": "tomorrow"})),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "invalid_request"));
    let until = rfc3339(SystemTime::now() + Duration::from_secs(2));
    let (s, v) = d
        .call(
            "POST",
            "/v1/throttle",
            Some(json!({"reason": "peak", "until": until})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["active"].as_bool(),
            v["reason"].as_str(),
            v["until"].as_str()
        ),
        (Some(true), Some("peak"), Some(until.as_str()))
    );
    assert_eq!(d.call("GET", "/v1/throttle", None).await.1["active"], true);
    assert!(d.metrics().await.contains("shadowcut_global_throttle 1"));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        d.call("GET", "/v1/throttle", None).await.1,
        json!({"active": false, "reason": null, "until": null, "since": null})
    );
    d.call("POST", "/v1/throttle", Some(json!({"reason": "incident"})))
        .await;
    let (s, v) = d.call("DELETE", "/v1/throttle", None).await;
    assert_eq!((s, v["active"].as_bool()), (200, Some(false)));

    // The CLI client drives the same API.
    let cli = |args: &[&str], token: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowcut"))
            .args(args)
            .env("SHADOWCUT_ADDR", format!("http://{}", d.addr))
            .env("SHADOWCUT_API_TOKEN", token)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, out, err) = cli(&["migrations", "show", &id2, "--follow"], "s3cret-token");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("[{}] 100.0%", "#".repeat(30))),
        "{out}"
    );
    assert!(out.contains(&format!("{id2}  completed  app.u")), "{out}");
    let (ok, out, _) = cli(
        &["migrations", "list", "--state", "cancelled"],
        "s3cret-token",
    );
    assert!(ok && out.contains(&id) && !out.contains(&id2), "{out}");
    let (ok, _, err) = cli(&["migrations", "pause", &id2], "s3cret-token");
    assert!(
        !ok && err.contains("409") && err.contains("wrong_state"),
        "{err}"
    );
    let (ok, _, err) = cli(&["migrations", "list"], "bad-token");
    assert!(!ok && err.contains("unauthorized"), "{err}");
    let (ok, out, _) = cli(
        &["throttle", "on", "--reason", "maintenance", "--for", "60"],
        "s3cret-token",
    );
    assert!(
        ok && out.starts_with("global throttle ON: maintenance"),
        "{out}"
    );
    assert_eq!(
        d.call("GET", "/v1/throttle", None).await.1["reason"],
        "maintenance"
    );
    let (ok, out, _) = cli(&["throttle", "off"], "s3cret-token");
    assert!(ok && out.trim() == "global throttle off", "{out}");
    let (ok, out, _) = cli(&["throttle", "status"], "s3cret-token");
    assert!(ok && out.trim() == "global throttle off", "{out}");

    // HTTP metrics count by route and status.
    let m = d.metrics().await;
    assert!(
        m.contains(
            r#"shadowcut_http_requests_total{method="GET",route="/v1/migrations",status="401"} 3"#
        ),
        "{m}"
    );
    assert!(m.contains(r#"route="/v1/migrations",status="422"}"#));
    assert!(m.contains(
        "shadowcut_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/migrations\""
    ));
    assert!(
        !d.log().contains("s3cret-token"),
        "the token is never logged"
    );
    // Finished migrations' series are dropped after the retention (2 s here); the totals stay.
    assert!(!m.contains(&format!("id=\"{id2}\"")), "{m}");
    assert!(!m.contains(&format!("id=\"{id}\"")));
    assert!(m.contains("shadowcut_migrations{state=\"completed\"} 1"));
}
