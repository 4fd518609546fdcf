//! Optional bearer-token check. Both sides are hashed before a constant-time comparison, so
//! neither the content nor the length of the secret leaks through timing.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::http_error::ApiFailure;

/// A configured secret, kept only as its digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// A token from its text; refuses short secrets.
    pub fn new(secret: &str) -> Result<Token, String> {
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err("the token must be at least 16 characters".into());
        }
        Ok(Token {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Whether `candidate` is the secret, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }
}

/// Lets a request through when no token is configured or it carries the right one, in the
/// `Authorization: Bearer` header or (for EventSource, which cannot set headers) an
/// `access_token` query parameter of a GET.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = (request.method() == axum::http::Method::GET)
        .then(|| {
            request.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|pair| pair.strip_prefix("access_token="))
                    .map(str::to_string)
            })
        })
        .flatten();
    match from_header.or(from_query) {
        Some(candidate) if token.matches(&candidate) => next.run(request).await,
        Some(_) => ApiFailure::unauthorized("the bearer token is wrong").into_response(),
        None => ApiFailure::unauthorized(
            "this server needs `Authorization: Bearer <token>` (the token given to `lightpeft serve`)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves_and_must_be_long() {
        let t = Token::new("correct horse battery staple").unwrap();
        assert!(t.matches("correct horse battery staple"));
        assert!(!t.matches("correct horse battery stapl"));
        assert!(!t.matches(""));
        assert!(Token::new("short").is_err());
    }
}
