//! A small HTTP client for the daemon's API (plain HTTP/1.1 over hyper, which axum already
//! brings in), used by the `migrations` and `throttle` commands.
//!
//! Every non-2xx answer becomes an error that carries the API's `code` and `message`; the token
//! is sent as a bearer header and never printed.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

use shadowcut::daemon::model::ErrorBody;

/// Where the daemon is and how to authenticate (shared flags of the client commands).
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The daemon's address, e.g. http://127.0.0.1:8080.
    #[arg(
        long,
        env = "SHADOWCUT_ADDR",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub addr: String,
    /// API token (read from SHADOWCUT_API_TOKEN when not given).
    #[arg(
        long,
        env = "SHADOWCUT_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

/// An API error answer.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Client {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let addr = args.addr.trim_end_matches('/');
        let base = if addr.starts_with("https://") {
            bail!("https is not supported by the client: put the daemon behind a local address or a TLS-terminating proxy and use http://");
        } else if addr.starts_with("http://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        Ok(Client {
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Sends a request and returns the status and the JSON body (Null when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method.clone()).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .with_context(|| format!("building {method} {url}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(120), self.http.request(req))
            .await
            .map_err(|_| anyhow!("{method} {url}: no answer within 120 s"))?
            .with_context(|| format!("{method} {url}: is the daemon running there?"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?
            .to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Ok((status, value))
    }

    /// Sends a request and parses a 2xx answer as `T`; other answers become [`ApiFailure`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let (status, value) = self.send(method, path, body, headers).await?;
        if !status.is_success() {
            let failure = match serde_json::from_value::<ErrorBody>(value.clone()) {
                Ok(e) => ApiFailure {
                    status,
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => ApiFailure {
                    status,
                    code: "http_error".into(),
                    message: value.to_string(),
                },
            };
            return Err(failure.into());
        }
        serde_json::from_value(value).context("the daemon's answer is not what this client expects")
    }
}
