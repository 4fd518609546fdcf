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

/// The credential of an `Authorization` header: what follows the `Bearer` scheme (any case),
/// as written and percent-decoded (the dashboard encodes it, since a header cannot carry every
/// character). `None` without such a header.
fn header_candidates(request: &Request) -> Option<[String; 2]> {
    let value = request.headers().get(axum::http::header::AUTHORIZATION)?;
    let value = std::str::from_utf8(value.as_bytes()).ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credential = credential.trim_start();
    let decoded = percent_decode(credential);
    Some([credential.to_string(), decoded])
}

/// `%XX` escapes decoded (nothing else: a `+` stays a `+` in a header); invalid escapes and
/// escapes that do not make UTF-8 are kept as written.
fn percent_decode(text: &str) -> String {
    // form_urlencoded also turns `+` into a space; protect literal pluses first.
    let protected = text.replace('+', "%2B");
    form_urlencoded::parse(format!("t={protected}").as_bytes())
        .next()
        .map_or_else(|| text.to_string(), |(_, v)| v.into_owned())
}

/// The `access_token` query parameter of a GET, form-decoded (`%XX` and `+` for a space), as
/// the browser's URL encoding writes it.
fn query_candidate(request: &Request) -> Option<String> {
    if request.method() != axum::http::Method::GET {
        return None;
    }
    form_urlencoded::parse(request.uri().query()?.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
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
    let candidates: Vec<String> = match header_candidates(&request) {
        Some(pair) => pair.into(),
        None => query_candidate(&request).into_iter().collect(),
    };
    // Every candidate is compared, so the time taken does not say which one was close.
    let matched = candidates
        .iter()
        .fold(false, |any, candidate| token.matches(candidate) | any);
    match (candidates.is_empty(), matched) {
        (_, true) => next.run(request).await,
        (false, false) => ApiFailure::unauthorized("the bearer token is wrong").into_response(),
        (true, false) => ApiFailure::unauthorized(
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

    fn request(uri: &str, authorization: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(axum::http::header::AUTHORIZATION, value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn header_credentials_are_read_raw_and_percent_decoded_under_any_case_of_bearer() {
        let [raw, decoded] =
            header_candidates(&request("/", Some("bEaReR a+b%2Fc%20d%e"))).unwrap();
        assert_eq!(raw, "a+b%2Fc%20d%e");
        assert_eq!(decoded, "a+b/c d%e");
        assert!(header_candidates(&request("/", Some("Basic abc"))).is_none());
        assert!(header_candidates(&request("/", None)).is_none());
    }

    #[test]
    fn the_query_parameter_is_form_decoded_and_only_read_on_get() {
        let got = query_candidate(&request(
            "/x?a=1&access_token=a%2Bb%2Fc%3Dd%25e+f&b=2",
            None,
        ));
        assert_eq!(got.as_deref(), Some("a+b/c=d%e f"));
        let post = Request::builder()
            .method("POST")
            .uri("/x?access_token=abc")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(query_candidate(&post), None);
    }
}
