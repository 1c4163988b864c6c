//! HTTP errors: one status and one stable `code` per failure, always as
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! The mapping is the API's contract (documented in `docs/openapi.yaml`): 400 the caller's
//! input (malformed JSON, bad options, an ALTER the parser or the server refuses, with the
//! server's message), 401 authentication, 404 unknown migration, target or table, 409 a busy
//! table or an action that does not fit the state, 422 a table that cannot be migrated (with
//! the failed `check`) or a reused idempotency key, 503 a target that cannot be reached.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::model::{ErrorBody, ErrorDetail};
use super::registry::RegistryError;
use crate::Error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
                check: None,
                migration_id: None,
            },
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token: send Authorization: Bearer <token>",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

fn engine(e: Error) -> ApiError {
    let msg = e.to_string();
    match e {
        Error::InvalidAlter(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_alter", msg),
        Error::AlterRejected(_) => ApiError::new(StatusCode::BAD_REQUEST, "alter_rejected", msg),
        Error::TableNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "table_not_found", msg),
        Error::Refused {
            check: "options", ..
        } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_options", msg),
        Error::Refused { check, .. } => {
            let mut err =
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "precondition_failed", msg);
            err.detail.check = Some(check.to_string());
            err
        }
        Error::Db { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "target_unavailable", msg)
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg),
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let msg = e.to_string();
        use RegistryError as R;
        match e {
            R::InvalidRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", msg),
            R::InvalidOptions(_) | R::OptionNotLive(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_options", msg)
            }
            R::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "migration_not_found", msg),
            R::TargetNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "target_not_found", msg),
            R::TableBusy { id, .. } if id.is_empty() => ApiError::new(
                StatusCode::CONFLICT,
                "table_busy",
                "another start request for this table is being checked",
            ),
            R::TableBusy { id, .. } => {
                let mut err = ApiError::new(StatusCode::CONFLICT, "table_busy", msg);
                err.detail.migration_id = Some(id);
                err
            }
            R::WrongState(_) => ApiError::new(StatusCode::CONFLICT, "wrong_state", msg),
            R::KeyReused(id) => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    msg,
                );
                err.detail.migration_id = Some(id);
                err
            }
            R::KeyInFlight => ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_flight", msg),
            R::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", msg),
            R::PreflightTimeout(_) | R::HistoryNotLoaded(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "target_unavailable", msg)
            }
            R::Engine(e) => engine(e),
        }
    }
}
