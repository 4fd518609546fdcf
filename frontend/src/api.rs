//! The REST client: every request goes to `/api/v1`, errors come back as [`Failure`] carrying
//! the API's `code`, `message` and `field`, so the view can put them next to their cause.

use std::cell::Cell;

use gloo_net::http::{Request, RequestBuilder, Response};
use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::rest::ErrorBody;
use serde::{Serialize, de::DeserializeOwned};

const BASE: &str = "/api/v1";
const TOKEN_KEY: &str = "lightpeft-token";

/// A failed request, as the API explained it (or as the network did).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// HTTP status; 0 when no answer came back.
    pub status: u16,
    /// The API's machine code, e.g. `invalid_param`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
}

impl Failure {
    fn network(message: impl std::fmt::Display) -> Self {
        Failure {
            status: 0,
            code: "network".into(),
            message: format!("no answer from the server: {message}"),
            field: None,
        }
    }

    /// A mistake found before anything was sent, e.g. a list that does not parse.
    pub fn local(message: String) -> Self {
        Failure {
            status: 0,
            code: "invalid".into(),
            message,
            field: None,
        }
    }

    /// Whether the failure names `field`.
    pub fn is_for(&self, field: &str) -> bool {
        self.field.as_deref() == Some(field)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

thread_local! {
    static AUTH_NEEDED: Cell<Option<RwSignal<bool>>> = const { Cell::new(None) };
}

/// Registers the signal raised when the API answers 401 (the header then shows a token field).
pub fn watch_auth(signal: RwSignal<bool>) {
    AUTH_NEEDED.with(|cell| cell.set(Some(signal)));
}

fn storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

/// The bearer token the user entered, if any.
pub fn token() -> Option<String> {
    storage()
        .and_then(|s| s.get_item(TOKEN_KEY).ok().flatten())
        .filter(|t| !t.is_empty())
}

/// Stores (or, when empty, forgets) the bearer token.
pub fn set_token(value: &str) {
    if let Some(s) = storage() {
        let _ = if value.is_empty() {
            s.remove_item(TOKEN_KEY)
        } else {
            s.set_item(TOKEN_KEY, value)
        };
    }
}

/// The absolute path of an API resource.
pub fn path(rest: &str) -> String {
    format!("{BASE}{rest}")
}

/// A URL for things the browser fetches itself (downloads, event streams), with the token in
/// the query since no header can be set there.
pub fn browser_url(rest: &str) -> String {
    let url = path(rest);
    match encoded_token() {
        Some(t) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}access_token={t}")
        }
        None => url,
    }
}

/// The token as it travels, in the header and in the query alike: percent-encoded, since a
/// header cannot carry every character and a query would mangle `+ & = %`. The server decodes
/// both.
fn encoded_token() -> Option<String> {
    token().map(|t| String::from(js_sys::encode_uri_component(&t)))
}

fn authorised(req: RequestBuilder) -> RequestBuilder {
    match encoded_token() {
        Some(t) => req.header("Authorization", &format!("Bearer {t}")),
        None => req,
    }
}

async fn failure(resp: Response) -> Failure {
    let status = resp.status();
    if status == 401 {
        AUTH_NEEDED.with(|cell| {
            if let Some(s) = cell.get() {
                s.set(true)
            }
        });
    }
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Failure {
            status,
            code: body.error.code,
            message: body.error.message,
            field: body.error.field,
        },
        Err(_) => Failure {
            status,
            code: "http".into(),
            message: format!("the server answered HTTP {status} without an explanation"),
            field: None,
        },
    }
}

async fn send(req: Result<Request, gloo_net::Error>) -> Result<Response, Failure> {
    let resp = req
        .map_err(Failure::network)?
        .send()
        .await
        .map_err(Failure::network)?;
    if resp.ok() {
        Ok(resp)
    } else {
        Err(failure(resp).await)
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, Failure> {
    let status = resp.status();
    resp.json::<T>().await.map_err(|e| Failure {
        status,
        code: "decode".into(),
        message: format!("the server's answer did not parse: {e}"),
        field: None,
    })
}

/// `GET rest`.
pub async fn get<T: DeserializeOwned>(rest: &str) -> Result<T, Failure> {
    let resp = send(authorised(Request::get(&path(rest))).build()).await?;
    decode(resp).await
}

/// `POST rest` with a JSON body.
pub async fn post<B: Serialize, T: DeserializeOwned>(rest: &str, body: &B) -> Result<T, Failure> {
    let resp = send(authorised(Request::post(&path(rest))).json(body)).await?;
    decode(resp).await
}

/// `POST rest` without a body (still saying JSON: the server refuses other POSTs, which a
/// cross-site form could send).
pub async fn post_empty<T: DeserializeOwned>(rest: &str) -> Result<T, Failure> {
    let request = authorised(Request::post(&path(rest))).header("Content-Type", "application/json");
    let resp = send(request.build()).await?;
    decode(resp).await
}

/// `POST rest` with a file as the body, saying `application/octet-stream` (which, like JSON,
/// a cross-site form cannot send); the browser streams the file.
pub async fn upload<T: DeserializeOwned>(rest: &str, file: &web_sys::File) -> Result<T, Failure> {
    let request = authorised(Request::post(&path(rest)))
        .header("Content-Type", "application/octet-stream")
        .body(wasm_bindgen::JsValue::from(file.clone()));
    let resp = send(request).await?;
    decode(resp).await
}

/// `DELETE rest`.
pub async fn delete(rest: &str) -> Result<(), Failure> {
    send(authorised(Request::delete(&path(rest))).build())
        .await
        .map(|_| ())
}

/// Keeps `target` filled from a URL that changes faster than the server answers (a
/// heatmap following a run, a slider): one request at a time, and when it returns, the
/// newest URL asked for meanwhile is fetched next. Failed requests keep the last value (and
/// say why where [`Latest::reporting`] names a place).
pub struct Latest<T: Send + Sync + 'static> {
    target: RwSignal<Option<T>>,
    busy: RwSignal<bool>,
    next: RwSignal<Option<String>>,
    failure: Option<RwSignal<Option<Failure>>>,
}

impl<T: Send + Sync + 'static> Clone for Latest<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Send + Sync + 'static> Copy for Latest<T> {}

impl<T: DeserializeOwned + Send + Sync + 'static> Latest<T> {
    /// A fetcher writing into `target`.
    pub fn new(target: RwSignal<Option<T>>) -> Self {
        Latest {
            target,
            busy: RwSignal::new(false),
            next: RwSignal::new(None),
            failure: None,
        }
    }

    /// Also writes each request's failure into `failure` (and clears it on success), so a page
    /// that cannot load says why instead of staying empty.
    pub fn reporting(mut self, failure: RwSignal<Option<Failure>>) -> Self {
        self.failure = Some(failure);
        self
    }

    /// Fetches `rest` now, or after the request in flight.
    pub fn fetch(self, rest: String) {
        if self.busy.get_untracked() {
            self.next.set(Some(rest));
            return;
        }
        self.busy.set(true);
        spawn_local(async move {
            let result = get::<T>(&rest).await;
            if self.busy.try_set(false).is_some() {
                return; // the view is gone
            }
            match result {
                Ok(v) => {
                    self.target.set(Some(v));
                    if let Some(failure) = self.failure {
                        failure.set(None);
                    }
                }
                Err(e) => {
                    if let Some(failure) = self.failure {
                        failure.set(Some(e));
                    }
                }
            }
            if let Some(next) = self.next.try_update(Option::take).flatten() {
                self.fetch(next);
            }
        });
    }
}
