//! The HTTP face of failures: every error is `{"error": {code, message, field}}` with a
//! status that says whose fault it is.
//!
//! The extractors here ([`ApiJson`], [`ApiQuery`], [`PathId`], [`ApiPath`]) turn every axum
//! rejection into that shape, naming the field at fault from the structured path
//! `serde_path_to_error` records, so no handler unwraps a rejection by hand.
//!
//! A 500's cause stays on the server: the body says "internal error" with a reference number,
//! and [`log_internal`] writes the cause to the log under the same number.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lightpeft_api::rest::{ApiError, ErrorBody};

/// A failed request.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The body; for a 500 the message is the cause, which goes to the log, not the client.
    pub error: ApiError,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
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

    /// 500: our fault. `message` is the cause; callers inside the server (the job runner)
    /// read it, the client sees only a reference to the log line that carries it.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The cause of a 500, carried from the handler to [`log_internal`] as a response extension.
#[derive(Debug, Clone)]
pub struct InternalError {
    /// The number the client's body and the log line share.
    pub reference: u64,
    /// What went wrong (database text, file paths: not for the client).
    pub cause: String,
}

/// Numbers 500s so that a user's report can be matched to the log.
static NEXT_REFERENCE: AtomicU64 = AtomicU64::new(1);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would succeed.
            let challenge = [(header::WWW_AUTHENTICATE, r#"Bearer realm="lightpeft""#)];
            return (
                self.status,
                challenge,
                Json(ErrorBody { error: self.error }),
            )
                .into_response();
        }
        if self.status != StatusCode::INTERNAL_SERVER_ERROR {
            return (self.status, Json(ErrorBody { error: self.error })).into_response();
        }
        let reference = NEXT_REFERENCE.fetch_add(1, Ordering::Relaxed);
        let body = ErrorBody {
            error: ApiError {
                code: self.error.code,
                message: format!("internal error (reference {reference} in the server log)"),
                field: None,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(InternalError {
            reference,
            cause: self.error.message,
        });
        response
    }
}

/// Logs the cause of every 500 a handler returned (see [`InternalError`]).
pub async fn log_internal(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if let Some(e) = response.extensions().get::<InternalError>() {
        tracing::error!(reference = e.reference, %method, path, "internal error: {}", e.cause);
    }
    response
}

/// The field a `serde_path_to_error` error in `rejection`'s source chain points at, with
/// `E` the format's error type.
///
/// The path names the value that failed to parse, or the unknown key. A missing field is the
/// one case serde reports only in words: the path then points at the object that lacks it,
/// and the field's name is taken from serde's fixed `missing field` wording.
fn field_at<E>(rejection: &(dyn std::error::Error + 'static)) -> Option<String>
where
    E: std::error::Error + 'static,
{
    let mut source = Some(rejection);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<serde_path_to_error::Error<E>>() {
            let segments: Vec<String> = found
                .path()
                .iter()
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let missing = found
                .inner()
                .to_string()
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string);
            let mut names = segments;
            names.extend(missing);
            return (!names.is_empty()).then(|| names.join("."));
        }
        source = e.source();
    }
    None
}

impl From<super::store::StoreError> for ApiFailure {
    /// The one place a store failure gets its status: a missing row is the client's 404, a
    /// refused state change its 409, a write the storage refused the server's 507 (nothing
    /// was stored; retry once space returns), anything else the server's 500.
    fn from(e: super::store::StoreError) -> Self {
        match e {
            super::store::StoreError::NotFound { .. } => ApiFailure::not_found(e.to_string()),
            super::store::StoreError::Conflict(message) => ApiFailure::conflict(message),
            e if e.is_storage_fault() => ApiFailure::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_unwritable",
                format!("nothing was stored: {e}. Free space where the database lives, then retry"),
            ),
            other => ApiFailure::internal(other.to_string()),
        }
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
                let failure = ApiFailure::invalid("invalid_body", e.body_text());
                match field_at::<serde_json::Error>(&e) {
                    Some(field) => failure.field(field),
                    None => failure,
                }
            }
            other => ApiFailure::invalid("invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiFailure {
    fn from(rejection: QueryRejection) -> Self {
        let failure = ApiFailure::invalid("invalid_query", rejection.body_text());
        match field_at::<serde_urlencoded::de::Error>(&rejection) {
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

/// The body of a POST that takes no options: `{}` or nothing (the content type is checked in
/// front of every POST); anything else is a 400, so a client that thinks it sent options
/// learns that none were read.
#[derive(Debug, Clone, Copy)]
pub struct NoBody;

impl<S: Send + Sync> axum::extract::FromRequest<S> for NoBody {
    type Rejection = ApiFailure;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiFailure> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiFailure::payload_too_large(),
                _ => ApiFailure::invalid("invalid_body", e.body_text()),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoBody);
        }
        match serde_json::from_slice::<lightpeft_api::rest::NoOptions>(&bytes) {
            Ok(_) => Ok(NoBody),
            Err(e) => Err(ApiFailure::invalid(
                "invalid_body",
                format!("this request takes no options: send `{{}}` ({e})"),
            )),
        }
    }
}

/// A JSON body; a body that does not parse is a 400 (415 without the JSON content type)
/// naming the field at fault.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiFailure))]
pub struct ApiJson<T>(pub T);

/// A query string; one that does not parse is a 400 `invalid_query` naming the field.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiFailure))]
pub struct ApiQuery<T>(pub T);

/// Path parameters other than a lone id (e.g. a job id and an artifact name).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiFailure))]
pub struct ApiPath<T>(pub T);

/// The `{id}` of a job, experiment or plan route; anything but a whole number is a 400
/// `invalid_id`.
#[derive(Debug, Clone, Copy, serde::Deserialize, FromRequestParts)]
#[serde(transparent)]
#[from_request(via(axum::extract::Path), rejection(ApiFailure))]
pub struct PathId(pub i64);

#[cfg(test)]
mod tests {
    use super::*;

    fn json_failure(body: &str) -> ApiFailure {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            lr: f64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            task: String,
            params: Option<Inner>,
        }
        let rejection = axum::Json::<Outer>::from_bytes(body.as_bytes()).unwrap_err();
        ApiFailure::from(rejection)
    }

    #[test]
    fn json_rejections_name_their_field_from_the_path() {
        let cases = [
            (r#"{"task": "a", "colour": 1}"#, Some("colour")),
            (r#"{"params": {"lr": 1}}"#, Some("task")),
            (
                r#"{"task": "a", "params": {"lr": "fast"}}"#,
                Some("params.lr"),
            ),
            (
                r#"{"task": "a", "params": {"lr": 1, "lrr": 2}}"#,
                Some("params.lrr"),
            ),
            // serde reads a struct from an array too; the first element is at fault.
            ("[1, 2]", Some("[0]")),
            ("7", None),
        ];
        for (body, field) in cases {
            let failure = json_failure(body);
            assert_eq!(failure.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(failure.error.code, "invalid_body", "{body}");
            assert_eq!(failure.error.field.as_deref(), field, "{body}");
        }
        assert_eq!(json_failure("{\"task\": ").error.code, "bad_json");
    }

    #[test]
    fn a_500_hides_its_cause_in_an_extension() {
        let response = ApiFailure::internal("database: disk I/O error").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let internal = response.extensions().get::<InternalError>().unwrap();
        assert_eq!(internal.cause, "database: disk I/O error");
        let reference = internal.reference;
        let body =
            futures_util::FutureExt::now_or_never(axum::body::to_bytes(response.into_body(), 4096))
                .unwrap()
                .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(
            !body.error.message.contains("disk"),
            "{}",
            body.error.message
        );
        assert!(body.error.message.contains(&reference.to_string()));
        assert_eq!(body.error.code, "internal");
    }
}
