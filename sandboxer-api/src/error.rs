//! Errors as HTTP responses: `{"code", "message", "hint"}` with the status
//! that matches the error's kind (the table is [`status_of`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sandboxer_core::{Error, ErrorKind};

/// The HTTP status for an error kind. The same kinds the CLI maps to exit
/// codes; the table is documented in `docs/http-api.md`.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput | ErrorKind::InvalidConfig => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        ErrorKind::NoPlacement => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unreachable | ErrorKind::ProvisionFailed => StatusCode::BAD_GATEWAY,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::StoreCorrupt | ErrorKind::Io | ErrorKind::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Every error: the kind (the same names as the CLI's `--json` errors), a
/// message for people and an optional hint.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody<'a> {
    pub code: ErrorKind,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'a str>,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status: status_of(kind),
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// A request value is wrong (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::InvalidInput, message)
    }

    /// The caller may not do this (403).
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Forbidden, message)
    }

    /// No or a bad token (401).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Unauthorized, message)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            code: self.kind,
            message: &self.message,
            hint: self.hint.as_deref(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        if status_of(kind).is_server_error() && !matches!(kind, ErrorKind::ProvisionFailed) {
            tracing::warn!("{kind}: {e}");
        }
        ApiError {
            status: status_of(kind),
            kind,
            message: e.message().to_string(),
            hint: e.hint().map(str::to_string),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // A body that came too slowly: the rest of it may still be on its
        // way, so the connection cannot carry another request.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_documented_status() {
        let table = [
            (ErrorKind::NotFound, 404),
            (ErrorKind::InvalidInput, 400),
            (ErrorKind::InvalidConfig, 400),
            (ErrorKind::Conflict, 409),
            (ErrorKind::InsufficientCredits, 402),
            (ErrorKind::NoPlacement, 503),
            (ErrorKind::Unreachable, 502),
            (ErrorKind::ProvisionFailed, 502),
            (ErrorKind::Unsupported, 501),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::Timeout, 504),
            (ErrorKind::StoreCorrupt, 500),
            (ErrorKind::Io, 500),
            (ErrorKind::Internal, 500),
        ];
        for (kind, status) in table {
            assert_eq!(status_of(kind).as_u16(), status, "{kind}");
        }
    }

    #[test]
    fn the_body_carries_code_message_and_hint() {
        let e: ApiError = Error::not_found("no sandbox `sbx-x`")
            .with_hint("list them")
            .into();
        assert_eq!(
            serde_json::to_value(e.body()).unwrap(),
            serde_json::json!({"code": "not_found", "message": "no sandbox `sbx-x`", "hint": "list them"})
        );
    }
}
