//! The HTTP face of failures: every error is `{"error": {code, message, field}}` with a
//! status that says whose fault it is.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lightpeft_api::rest::{ApiError, ErrorBody};

/// A failed request.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub error: ApiError,
}

impl ApiFailure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            error: ApiError {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// Names the request field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    /// 400: the request is malformed or a value is out of range.
    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with a job's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 422: well-formed but unusable (e.g. a model folder that does not load).
    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 413: the body is over the server's limit.
    pub fn payload_too_large() -> Self {
        ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the server accepts",
        )
    }

    /// 500: our fault; the message is logged and returned.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        eprintln!("internal error: {message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.error })).into_response()
    }
}

impl From<JsonRejection> for ApiFailure {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiFailure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiFailure::payload_too_large()
            }
            JsonRejection::JsonSyntaxError(e) => ApiFailure::invalid(
                "bad_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => {
                let text = e.body_text();
                let failure = ApiFailure::invalid("invalid_body", text.clone());
                // serde names the field as `field_name: message` or in backticks.
                match field_of(&text) {
                    Some(field) => failure.field(field),
                    None => failure,
                }
            }
            other => ApiFailure::invalid("invalid_body", other.body_text()),
        }
    }
}

/// The field serde complained about, if its message names one.
fn field_of(text: &str) -> Option<String> {
    // "Failed to deserialize the JSON body into the target type: params.lr: invalid type…"
    let after = text.split(": ").nth(1)?;
    if let Some(rest) = text.split("unknown field `").nth(1) {
        return rest.split('`').next().map(str::to_string);
    }
    if let Some(rest) = text.split("missing field `").nth(1) {
        return rest.split('`').next().map(str::to_string);
    }
    let candidate = after.split(' ').next()?;
    let clean = candidate.trim_end_matches(':');
    (!clean.is_empty()
        && clean
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
    .then(|| clean.to_string())
}

impl From<QueryRejection> for ApiFailure {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let failure = ApiFailure::invalid("invalid_query", text.clone());
        match field_of(&text) {
            Some(field) => failure.field(field),
            None => failure,
        }
    }
}

impl From<PathRejection> for ApiFailure {
    fn from(rejection: PathRejection) -> Self {
        ApiFailure::invalid(
            "invalid_id",
            format!("{}: ids are positive whole numbers", rejection.body_text()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            field_of(
                "Failed to deserialize the JSON body into the target type: unknown field `lrr`, expected one of"
            ),
            Some("lrr".into())
        );
        assert_eq!(
            field_of(
                "Failed to deserialize the JSON body into the target type: missing field `task` at line 1"
            ),
            Some("task".into())
        );
        assert_eq!(
            field_of(
                "Failed to deserialize the JSON body into the target type: head_ratio: invalid type: string"
            ),
            Some("head_ratio".into())
        );
    }
}
