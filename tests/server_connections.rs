//! Half-sent requests cannot starve the server: a thousand connections that never finish
//! their headers leave `/health` answering, are closed after the header deadline, and past
//! `--max-connections` a new connection gets a 503 instead of waiting.

mod common;

use std::time::{Duration, Instant};

use common::{Server, data_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of the server's listening address.
fn address(server: &Server) -> String {
    let url = server.url("");
    let rest = url.strip_prefix("http://").unwrap();
    rest.split('/').next().unwrap().to_string()
}

/// A connection that sent the start of a request and stops before the headers end.
async fn half_open(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_do_not_stop_health_and_are_closed() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let addr = address(&server);
    // One connection that never sends a byte.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(half_open(&addr).await);
    }
    let client = common::http_client()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let answer = client.get(server.url("/health")).send().await;
    let answer = answer.expect("/health answers within 1 s beside 1,000 half-open connections");
    assert_eq!(answer.status(), 200);

    // The header deadline (10 s) answers each half-sent request with a 408 and closes it.
    let started = Instant::now();
    let mut first = held.swap_remove(0);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), first.read_to_end(&mut answer)).await;
    read.expect("closed before 30 s").unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(
        text.starts_with("HTTP/1.1 408") && text.contains(r#""code":"request_timeout""#),
        "a half-sent request got {text:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed too early"
    );
    // A connection that sent nothing is closed by the same deadline, with no answer.
    let mut nothing = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut nothing)).await;
    read.expect("a silent connection is closed before 30 s")
        .unwrap();
    assert!(
        nothing.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&nothing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_get_503() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &["--max-connections", "20"], None);
    let addr = address(&server);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_open(&addr).await);
    }
    // The server has accepted them all once /health cannot get a slot.
    let mut busy = String::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(
                b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        busy = String::from_utf8_lossy(&answer).to_string();
        if busy.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy:?}");
    assert!(busy.contains("\"code\":\"busy\""), "{busy:?}");
    // An HTTP client gets the 503 as an answer to its request, not as a broken connection
    // (an answer sent before the request arrives reaches hyper as a message it never asked for).
    for _ in 0..5 {
        let fresh = common::http_client().build().unwrap();
        let answer = fresh.get(server.url("/health")).send().await;
        let answer = answer.expect("a 503 answer past the cap");
        assert_eq!(answer.status().as_u16(), 503);
        assert_eq!(answer.headers()["retry-after"], "1");
    }
    // Freed slots serve again.
    drop(held);
    let started = Instant::now();
    loop {
        let (status, _) = server.get("/health").await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still busy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
