//! Browser-facing safety, before any handler: a web page in another tab must not be able to
//! change state (cross-site writes), and a hostile name resolving to loopback must not reach
//! the API (DNS rebinding).
//!
//! A page can make the browser send a cross-site POST without asking the server first only
//! with a "simple" content type (form, multipart, text/plain) or none; a request saying
//! `application/json` needs a CORS preflight, which this server never grants. So every POST
//! must say `application/json`, except a dataset upload, which must say
//! `application/octet-stream` (not a simple type either). Other writing methods (DELETE)
//! always need a preflight.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::http_error::ApiFailure;

/// The host names requests may address, from the listening address and `--allow-host`.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Lower-case names (`localhost`, `127.0.0.1`, `::1`); `None`: any (listening on every
    /// interface without an allow-list, where the required token is the protection).
    names: Option<Vec<String>>,
}

impl HostPolicy {
    /// The names for a server listening on `addr`, plus `extra`.
    pub fn new(addr: SocketAddr, extra: &[String]) -> HostPolicy {
        let ip = addr.ip();
        if ip.is_unspecified() && extra.is_empty() {
            return HostPolicy { names: None };
        }
        let mut names: Vec<String> = extra.iter().map(|n| n.trim().to_lowercase()).collect();
        names.push(ip.to_string());
        if ip.is_loopback() || ip.is_unspecified() {
            names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        HostPolicy { names: Some(names) }
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        let host = host.trim().to_lowercase();
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n),
        };
        names.iter().any(|n| n == name)
    }
}

/// Refuses a request whose `Host` names another server (403). A request without `Host`
/// (HTTP/1.0, in-process calls) passes: browsers always send one.
pub async fn refuse_foreign_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(host) = request.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("(not text)");
        if !state.hosts.allows(host) {
            return ApiFailure::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "Host `{host}` is not this server's name; start the server with --allow-host NAME to serve it under another name"
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Refuses a POST that does not say `Content-Type: application/json` (415), which a
/// cross-site form cannot send. Installed on the routes only, so a method a path does not
/// take is still its 405.
pub async fn refuse_non_json_post(request: Request, next: Next) -> Response {
    if is_upload(&request) {
        if !says(&request, "application/octet-stream") {
            return ApiFailure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "an upload must say Content-Type: application/octet-stream, which a cross-site form cannot",
            )
            .into_response();
        }
        return next.run(request).await;
    }
    if request.method() == Method::POST && !says(&request, "application/json") {
        return ApiFailure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a POST must say Content-Type: application/json (even without a body), which a cross-site form cannot",
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether the request is a POST of a dataset file (`/datasets/uploads` under the API root).
pub fn is_upload(request: &Request) -> bool {
    request.method() == Method::POST
        && request
            .uri()
            .path()
            .trim_end_matches('/')
            .ends_with("/datasets/uploads")
}

fn says(request: &Request, media_type: &str) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(media_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_answers_to_its_names_only() {
        let policy = HostPolicy::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
            "127.0.0.1",
        ] {
            assert!(policy.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "[::2]:8080",
            "",
        ] {
            assert!(!policy.allows(bad), "{bad}");
        }
        let named = HostPolicy::new("127.0.0.1:8080".parse().unwrap(), &["Box.Lan".into()]);
        assert!(named.allows("box.lan:8080"));
    }

    #[test]
    fn every_interface_without_a_list_answers_any_name() {
        let policy = HostPolicy::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(policy.allows("anything.example"));
        let listed = HostPolicy::new("0.0.0.0:8080".parse().unwrap(), &["gpu.lan".into()]);
        assert!(listed.allows("gpu.lan:8080") && listed.allows("localhost"));
        assert!(!listed.allows("evil.example"));
    }
}
