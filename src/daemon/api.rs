//! The HTTP API: the router, authentication, request metrics and the handlers.
//!
//! Handlers are thin: they parse and validate the request, call the [`Registry`], and render
//! the result; every failure becomes an [`ApiError`]. Bodies are parsed by hand (not with the
//! `Json` extractor) so a malformed body gets the same error document as everything else.
//! [`ROUTES`] lists every route; the router is built from the same calls and refuses to start
//! if the two disagree, and a test checks `docs/openapi.yaml` against the list.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::model::{
    parse_rfc3339, MigrationList, MigrationView, StartRequest, ThrottleRequest, ThrottleView,
};
use super::registry::{Filter, Registry};
use crate::inspect;
use crate::state::State as MigrationState;

/// Every route as (method, path): the router's and the OpenAPI document's.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/migrations"),
    ("POST", "/v1/migrations"),
    ("GET", "/v1/migrations/{id}"),
    ("PATCH", "/v1/migrations/{id}"),
    ("POST", "/v1/migrations/{id}/pause"),
    ("POST", "/v1/migrations/{id}/resume"),
    ("POST", "/v1/migrations/{id}/cutover"),
    ("POST", "/v1/migrations/{id}/cancel"),
    ("POST", "/v1/migrations/{id}/restart"),
    ("GET", "/v1/throttle"),
    ("POST", "/v1/throttle"),
    ("DELETE", "/v1/throttle"),
];

pub struct AppState {
    pub registry: Arc<Registry>,
    pub tokens: Vec<String>,
}

type S = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

/// Builds a router and records what it added.
struct Routes {
    router: Router<S>,
    added: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: &'static str, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            _ => MethodFilter::PUT,
        };
        self.router = self.router.route(path, on(filter, handler));
        self.added.push((method, path));
        self
    }
}

fn new_routes() -> Routes {
    Routes {
        router: Router::new(),
        added: Vec::new(),
    }
}

/// The whole API. Errs only if the router and [`ROUTES`] disagree (a programming error).
pub fn router(state: S) -> Result<Router, String> {
    let open = new_routes()
        .add("GET", "/healthz", healthz)
        .add("GET", "/readyz", readyz)
        .add("GET", "/metrics", metrics);
    let v1 = new_routes()
        .add("GET", "/v1/migrations", list)
        .add("POST", "/v1/migrations", start)
        .add("GET", "/v1/migrations/{id}", show)
        .add("PATCH", "/v1/migrations/{id}", patch)
        .add("POST", "/v1/migrations/{id}/pause", pause)
        .add("POST", "/v1/migrations/{id}/resume", resume)
        .add("POST", "/v1/migrations/{id}/cutover", cutover)
        .add("POST", "/v1/migrations/{id}/cancel", cancel)
        .add("POST", "/v1/migrations/{id}/restart", restart)
        .add("GET", "/v1/throttle", throttle_status)
        .add("POST", "/v1/throttle", throttle_on)
        .add("DELETE", "/v1/throttle", throttle_off);
    let mut added: Vec<_> = open.added.iter().chain(&v1.added).copied().collect();
    let mut expected = ROUTES.to_vec();
    added.sort();
    expected.sort();
    if added != expected {
        return Err(format!(
            "router and ROUTES disagree: {added:?} vs {expected:?}"
        ));
    }
    let v1 = v1
        .router
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Ok(open
        .router
        .merge(v1)
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(state.clone(), http_metrics))
        .with_state(state))
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        format!("no route {method} {}", uri.path()),
    )
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<S>, req: Request, next: Next) -> Response {
    if st.tokens.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = given.is_some_and(|g| st.tokens.iter().any(|t| same(t.as_bytes(), g.as_bytes())));
    if ok {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

async fn http_metrics(State(st): State<S>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    st.registry
        .metrics
        .http_request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

fn ok<T: Serialize>(v: T) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

async fn healthz() -> Response {
    ok(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(st): State<S>) -> Response {
    let checks = st.registry.targets().values().map(|t| async move {
        let check = async {
            let mut conn = t.settings.connect("readiness check").await?;
            let version = inspect::server_version(&mut conn).await?;
            let result = inspect::check_binlog_settings(&mut conn, &version).await;
            let _ = conn.disconnect().await;
            result
        };
        let outcome = match tokio::time::timeout(Duration::from_secs(5), check).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 5 s".to_string()),
        };
        (t.name.clone(), outcome)
    });
    let results = futures_util::future::join_all(checks).await;
    let ready = results.iter().all(|(_, e)| e.is_none());
    let targets: BTreeMap<String, Value> = results
        .into_iter()
        .map(|(name, e)| {
            let v = match e {
                None => serde_json::json!({"ready": true}),
                Some(msg) => serde_json::json!({"ready": false, "error": msg}),
            };
            (name, v)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "targets": targets})),
    )
        .into_response()
}

async fn metrics(State(st): State<S>) -> Response {
    super::refresh_metrics(&st.registry);
    match st.registry.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

async fn list(
    State(st): State<S>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mut f = Filter::default();
    for (k, v) in q {
        match k.as_str() {
            "state" => {
                f.state = Some(MigrationState::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown state {v:?}: one of {}",
                        MigrationState::ALL.map(|s| s.as_str()).join(", ")
                    ))
                })?)
            }
            "target" => f.target = Some(v),
            "database" => f.database = Some(v),
            "table" => f.table = Some(v),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k:?}: use state, target, database or table"
                )))
            }
        }
    }
    let migrations: Vec<MigrationView> = st.registry.list(&f).iter().map(|e| e.view()).collect();
    Ok(ok(MigrationList { migrations }))
}

async fn start(State(st): State<S>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let req: StartRequest = parse(&body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                ApiError::bad_request("the Idempotency-Key header must be printable ASCII")
            })?;
            if k.is_empty() || k.len() > 255 {
                return Err(ApiError::bad_request(
                    "the Idempotency-Key header must be 1 to 255 characters",
                ));
            }
            Some(k.to_string())
        }
    };
    let (entry, created) = st.registry.start(req, key).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/migrations/{}", entry.id);
    Ok((status, [(header::LOCATION, location)], Json(entry.view())).into_response())
}

async fn show(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(st.registry.get(&id)?.view()))
}

async fn patch(State(st): State<S>, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
    let changes: Map<String, Value> = parse(&body)?;
    if changes.is_empty() {
        return Err(ApiError::bad_request("the body names no option to change"));
    }
    Ok(ok(st.registry.patch(&id, &changes).await?.view()))
}

async fn pause(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(st.registry.pause(&id)?.view()))
}

async fn resume(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(st.registry.resume(&id)?.view()))
}

async fn cutover(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(st.registry.cutover(&id)?.view()))
}

async fn cancel(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(ok(st.registry.cancel(&id).await?.view()))
}

/// Starts a failed or cancelled migration again from scratch: a new migration (201, Location).
async fn restart(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    let entry = st.registry.restart(&id).await?;
    let location = format!("/v1/migrations/{}", entry.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(entry.view()),
    )
        .into_response())
}

fn throttle_view(st: &AppState) -> ThrottleView {
    st.registry.global.view()
}

async fn throttle_status(State(st): State<S>) -> Response {
    ok(throttle_view(&st))
}

async fn throttle_on(State(st): State<S>, body: Bytes) -> ApiResult<Response> {
    let req: ThrottleRequest = parse(&body)?;
    let reason = req.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::bad_request("reason must not be empty"));
    }
    let until = match &req.until {
        None => None,
        Some(text) => {
            let t = parse_rfc3339(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "until {text:?} is not an RFC 3339 time like 2024-03-01T18:00:00Z"
                ))
            })?;
            if t <= SystemTime::now() {
                return Err(ApiError::bad_request(format!(
                    "until {text:?} is in the past"
                )));
            }
            Some(t)
        }
    };
    st.registry.global.set(reason.clone(), until);
    st.registry.metrics.set_global_throttle(true);
    tracing::info!(%reason, until = ?req.until, "global throttle on");
    Ok(ok(throttle_view(&st)))
}

async fn throttle_off(State(st): State<S>) -> Response {
    st.registry.global.clear();
    st.registry.metrics.set_global_throttle(false);
    tracing::info!("global throttle off");
    ok(throttle_view(&st))
}
