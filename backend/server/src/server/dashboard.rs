//! The dashboard as the binary carries it: `assets/` and the wasm-bindgen output in
//! `frontend/dist` (kept in the repository, checked by `scripts/build-dashboard.sh --check` to
//! be what the sources build), so a user builds only the server. Any path that is not a file is the single-page app's
//! own route and gets `index.html`.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// (path, media type, bytes) of every embedded file.
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../../../assets/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../../assets/style.css"),
    ),
    (
        "/lightpeft_dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../../frontend/dist/lightpeft_dashboard.js"),
    ),
    (
        "/lightpeft_dashboard_bg.wasm",
        "application/wasm",
        include_bytes!("../../../../frontend/dist/lightpeft_dashboard_bg.wasm"),
    ),
];

/// An embedded file's entity tag: its content's hash, so a browser revalidates cheaply and
/// never keeps an old build.
fn etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Serves the embedded dashboard.
pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| FILES.iter().map(|(_, _, bytes)| etag(bytes)).collect());
    let index = FILES
        .iter()
        .position(|(path, ..)| *path == uri.path())
        .unwrap_or(0);
    let (_, media, bytes) = FILES[index];
    let tag = tags[index].clone();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let tag = HeaderValue::from_str(&tag).expect("hex in quotes");
    let cache = HeaderValue::from_static("no-cache");
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, tag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media)),
            (header::ETAG, tag),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_by_path_routes_as_index_and_revalidation() {
        let get = |path: &str, tag: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(t) = tag {
                headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(t).unwrap());
            }
            serve(path.parse().unwrap(), headers)
        };
        let wasm = get("/lightpeft_dashboard_bg.wasm", None).await;
        assert_eq!(wasm.status(), StatusCode::OK);
        assert_eq!(wasm.headers()[header::CONTENT_TYPE], "application/wasm");
        let route = get("/studies/3", None).await;
        assert_eq!(
            route.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let tag = route.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(
            get("/", Some(&tag)).await.status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(get("/", Some("\"other\"")).await.status(), StatusCode::OK);
        assert_ne!(tag, etag(FILES[3].2), "each file its own tag");
    }
}
