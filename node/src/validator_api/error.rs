//! Beacon-API style errors: `{"code": <status>, "message": "..."}`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

/// Why a [`DutyBackend`](super::DutyBackend) call failed. Each kind maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The request is malformed (400). The message names the offending field.
    #[error("{0}")]
    BadRequest(String),
    /// The requested object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Not available yet or not in time, e.g. "no consensus yet" (503). The message gives the reason.
    #[error("{0}")]
    Unavailable(String),
    /// The distributed validator cannot serve this request (501).
    #[error("{0}")]
    Unsupported(String),
    /// The beacon node could not be reached or did not answer in time (502).
    #[error("beacon node {url} unreachable: {reason}")]
    BeaconNodeUnreachable {
        /// Beacon node base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The beacon node answered with an error; its status and JSON body are passed on verbatim.
    #[error("beacon node answered {status}: {body}")]
    BeaconNode {
        /// HTTP status of the beacon node's answer.
        status: u16,
        /// Its body (JSON, or a string holding the raw text).
        body: Value,
    },
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl BackendError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            BackendError::BadRequest(_) => StatusCode::BAD_REQUEST,
            BackendError::NotFound(_) => StatusCode::NOT_FOUND,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            BackendError::BeaconNodeUnreachable { .. } => StatusCode::BAD_GATEWAY,
            BackendError::BeaconNode { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer of the validator API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Response body.
    pub body: Value,
}

impl ApiError {
    /// `{"code": status, "message": message}` with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status,
            body: json!({"code": status.as_u16(), "message": message}),
        }
    }

    /// A 400 answer naming the malformed field.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        match e {
            BackendError::BeaconNode { status, body } => ApiError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body: if body.is_object() {
                    body
                } else {
                    json!({"code": status, "message": body})
                },
            },
            other => ApiError::new(other.status(), other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
