//! The standard MK.IO error body (`error.code/detail/extraDetail`, `status`, `ref`).

use super::ids;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered with MK.IO's standard body; every one gets a fresh `ref`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", detail)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this method is not allowed on this path",
        )
    }

    /// An injected fault: any final status (200-599; others become 500), with a code derived
    /// from it.
    pub fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| (200..600).contains(&s.as_u16()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match status.as_u16() {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            s if s >= 500 => "InternalServerError",
            _ => "InjectedFault",
        };
        Self::new(status, code, "fault injected by mkio-sim")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "detail": self.detail, "extraDetail": {} },
            "status": self.status.as_u16(),
            "ref": ids::error_ref(),
        });
        (self.status, Json(body)).into_response()
    }
}
