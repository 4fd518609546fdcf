//! The accept loop: bounded connections and a deadline for request headers, so half-sent
//! requests cannot pile up until the server stops answering (`axum::serve` sets neither).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How long a client has to send a request's headers (also between requests on a kept-alive
/// connection) before its connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for open connections (event streams end on their own).
const DRAIN: Duration = Duration::from_secs(10);

/// The whole answer to a connection past the cap (no handler runs for it).
fn busy_answer() -> Vec<u8> {
    let body = r#"{"error":{"code":"busy","message":"too many open connections; retry shortly","field":null}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The whole answer to a request whose headers did not arrive within [`HEADER_TIMEOUT`].
fn timeout_answer() -> Vec<u8> {
    let body = r#"{"error":{"code":"request_timeout","message":"the request's headers did not arrive within 10 s","field":null}}"#;
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A connection's stream as hyper sees it, noting whether a request has begun to arrive and
/// not been answered yet; its write half is shared, so that once hyper gives up on a
/// half-sent request the accept loop can still answer it with a 408.
struct Watched {
    read: OwnedReadHalf,
    write: Arc<Mutex<OwnedWriteHalf>>,
    /// Bytes were read since the last write: a request is on its way.
    pending: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.read).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.pending.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.store(false, Ordering::Relaxed);
        let mut write = self.write.lock().expect("write half");
        Pin::new(&mut *write).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut write = self.write.lock().expect("write half");
        Pin::new(&mut *write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut write = self.write.lock().expect("write half");
        Pin::new(&mut *write).poll_shutdown(cx)
    }
}

/// How long a connection past the cap may take to send its request head before its 503.
const BUSY_READ: Duration = Duration::from_secs(2);

/// The most of a request head read before a connection past the cap gets its 503.
const BUSY_HEAD_LIMIT: usize = 16 * 1024;

/// Answers a connection past the cap with its 503 once its request head has arrived (or
/// [`BUSY_READ`] passed): an answer written before the request reaches a client that has not
/// sent it yet as a message it never asked for, which HTTP clients report as a broken
/// connection instead of a 503; closing with the request unread would reset it the same way.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < BUSY_HEAD_LIMIT {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if matches!(tokio::time::timeout(BUSY_READ, read_head).await, Ok(false)) {
        return;
    }
    let _ = stream.write_all(&busy_answer()).await;
    let _ = stream.shutdown().await;
    // A body still on its way is read and dropped for a moment, so the close does not reset
    // the connection before the client has read its 503.
    let mut left = BUSY_HEAD_LIMIT * 4;
    let drain = async {
        while left > 0 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Whether hyper ended a connection for its header deadline.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets open
/// connections finish their current request and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    // Connections past the cap being answered their 503 at once.
    let refusals = Arc::new(Semaphore::new(max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Past the cap too: just close, so a flood cannot grow the tasks without bound.
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse_busy(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            // hyper's deadline starts once it has read enough to tell HTTP/1 from HTTP/2; a
            // connection that sends nothing at all would hold its slot forever without this.
            let mut first = [0u8; 1];
            let arrived = tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await;
            if !matches!(arrived, Ok(Ok(n)) if n > 0) {
                drop(slot);
                return;
            }
            let (read, write) = stream.into_split();
            let write = Arc::new(Mutex::new(write));
            let pending = Arc::new(AtomicBool::new(false));
            let io = Watched {
                read,
                write: write.clone(),
                pending: pending.clone(),
            };
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let mut connection =
                Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async { drop(stopping.wait_for(|s| *s).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            // hyper closes a connection whose request headers are late without a word; a
            // request that had begun gets its 408 here (an idle kept-alive one just closes).
            drop(connection);
            if let Err(e) = ended
                && timed_out(e.as_ref())
                && pending.load(Ordering::Relaxed)
                && let Ok(write) = Arc::try_unwrap(write)
            {
                let mut write = write.into_inner().expect("write half");
                let _ = write.write_all(&timeout_answer()).await;
                let _ = write.shutdown().await;
            }
            drop(slot);
        });
    }
    let _ = stop.send(true);
    // Every slot back means every connection closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(all)).await;
}

#[cfg(test)]
mod tests {
    use super::{busy_answer, timeout_answer};

    #[test]
    fn the_timeout_answer_is_a_408_with_the_error_shape() {
        let answer = timeout_answer();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "request_timeout");
    }

    #[test]
    fn the_busy_answer_declares_its_body_length() {
        let answer = busy_answer();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
