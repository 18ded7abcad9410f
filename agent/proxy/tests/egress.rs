//! The egress proxy driven by `curl -x` (the reference client), against a
//! local HTTP server that records what reached it and a TCP echo server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cocos_proxy::egress::{Egress, EgressConfig, EgressError, EgressHandle};
use common::require_tool;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cocos_proxy=debug".into()),
        )
        .try_init();
}

// ---------------------------------------------------------------- upstream

/// What the upstream HTTP server received.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    headers: HeaderMap,
}

/// A local HTTP server that records connections and requests.
#[derive(Clone, Default)]
struct Upstream {
    addr: Option<SocketAddr>,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Seen>>>,
    /// `/slow` sends its second chunk when this is notified.
    release: Arc<Notify>,
}

type TestBody = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: &str) -> Response<TestBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *r.status_mut() = status;
    r
}

impl Upstream {
    async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: Some(listener.local_addr().unwrap()),
            ..Default::default()
        };
        let server = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                server.connections.fetch_add(1, Ordering::SeqCst);
                let s = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.route(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        up
    }

    fn addr(&self) -> SocketAddr {
        self.addr.unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    async fn route(&self, req: Request<Incoming>) -> Response<TestBody> {
        self.requests.lock().unwrap().push(Seen {
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
        });
        match req.uri().path() {
            "/hello" => full(StatusCode::OK, "hello from upstream\n"),
            "/redirect" => {
                let mut r = full(StatusCode::FOUND, "moved\n");
                r.headers_mut()
                    .insert("location", "/hello".parse().unwrap());
                r
            }
            "/hop" => {
                let mut r = full(StatusCode::OK, "hop\n");
                let h = r.headers_mut();
                h.insert("connection", "x-resp-hop".parse().unwrap());
                h.insert("x-resp-hop", "1".parse().unwrap());
                h.insert("keep-alive", "timeout=5".parse().unwrap());
                h.insert("proxy-authenticate", "Basic realm=\"x\"".parse().unwrap());
                h.insert("x-resp-end", "kept".parse().unwrap());
                r
            }
            "/sha256" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let hex: String = Sha256::digest(&body)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                full(StatusCode::OK, &format!("{} {hex}\n", body.len()))
            }
            "/slow" => {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
                let release = self.release.clone();
                tokio::spawn(async move {
                    tx.send(Ok(Frame::data(Bytes::from_static(b"first-chunk\n"))))
                        .await
                        .unwrap();
                    release.notified().await;
                    tx.send(Ok(Frame::data(Bytes::from_static(b"second-chunk\n"))))
                        .await
                        .unwrap();
                });
                Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed())
            }
            _ => full(StatusCode::NOT_FOUND, "no such path\n"),
        }
    }
}

/// A TCP echo server: echoes until EOF, then closes. Counts connections.
async fn spawn_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, count)
}

// ---------------------------------------------------------------- proxy

async fn start_proxy(allow: &[String]) -> EgressHandle {
    init_logs();
    Egress::start(EgressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: allow.to_vec(),
        dial_timeout: Duration::from_secs(5),
        ..EgressConfig::default()
    })
    .await
    .unwrap()
}

/// What curl reported.
#[derive(Debug)]
struct Curl {
    exit: i32,
    /// `-w` output.
    written: String,
    headers: String,
    body: String,
    #[allow(dead_code)] // read through Debug in failure messages
    stderr: String,
}

async fn curl(proxy: SocketAddr, args: &[&str]) -> Curl {
    require_tool("curl", "apt-get install -y curl");
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "--noproxy", "", "-x"])
        .arg(format!("http://{proxy}"))
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .await
        .unwrap();
    Curl {
        exit: out.status.code().unwrap_or(-1),
        written: String::from_utf8_lossy(&out.stdout).into_owned(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads from `conn` until the bytes read contain `needle` (or panics
/// after 10 s); returns everything read.
async fn read_until(conn: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out; read so far: {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "EOF before {:?}; read: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn header_names(h: &HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.as_str().to_owned()).collect()
}

// ---------------------------------------------------------------- absolute-form

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_absolute_form_get_returns_the_upstream_body() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;

    let c = curl(
        proxy.local_addr(),
        &["-w", "%{http_code}", &up.url("/hello")],
    )
    .await;
    assert_eq!(c.exit, 0, "{c:?}");
    assert_eq!(c.written, "200");
    assert_eq!(c.body, "hello from upstream\n");
    // The origin got an origin-form request.
    assert_eq!(up.requests()[0].uri, "/hello");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_resolved_and_matched_case_insensitively() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[format!("LocalHost:{}", up.addr().port())]).await;
    let url = format!("http://localhost:{}/hello", up.addr().port());
    let c = curl(proxy.local_addr(), &["-w", "%{http_code}", &url]).await;
    assert_eq!(
        (c.written.as_str(), c.body.as_str()),
        ("200", "hello from upstream\n"),
        "{c:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_host_gets_403_and_the_upstream_sees_no_connection() {
    let up = Upstream::spawn().await;
    // Same host, another port: not allowed.
    let proxy = start_proxy(&[format!("127.0.0.1:{}", up.addr().port() ^ 1)]).await;

    let c = curl(
        proxy.local_addr(),
        &["-w", "%{http_code}", &up.url("/hello")],
    )
    .await;
    assert_eq!(c.written, "403", "{c:?}");
    assert_eq!(
        c.body,
        format!("host {} is not on the egress allowlist\n", up.addr())
    );
    assert_eq!(up.connections(), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_allowlist_denies_everything() {
    let up = Upstream::spawn().await;
    let (echo, echo_connections) = spawn_echo().await;
    let proxy = start_proxy(&[]).await;

    let c = curl(
        proxy.local_addr(),
        &["-w", "%{http_code}", &up.url("/hello")],
    )
    .await;
    assert_eq!(c.written, "403", "{c:?}");
    let c = curl(
        proxy.local_addr(),
        &["-p", "-w", "%{http_connect}", &format!("http://{echo}/")],
    )
    .await;
    assert!(c.written.starts_with("403"), "{c:?}");
    assert_eq!(
        up.connections() + echo_connections.load(Ordering::SeqCst),
        0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_passed_back_not_followed() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;

    let c = curl(
        proxy.local_addr(),
        &["-w", "%{http_code}", &up.url("/redirect")],
    )
    .await;
    assert_eq!(c.written, "302", "{c:?}");
    assert!(
        c.headers.to_ascii_lowercase().contains("location: /hello"),
        "{c:?}"
    );
    assert_eq!(c.body, "moved\n");
    let seen: Vec<_> = up.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(seen, ["/redirect"]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_both_ways_and_host_is_the_target() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;

    let c = curl(
        proxy.local_addr(),
        &[
            "-w",
            "%{http_code}",
            "-U",
            "user:secret",
            "-H",
            "Connection: keep-alive, X-Secret-Hop",
            "-H",
            "X-Secret-Hop: 1",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "TE: trailers",
            "-H",
            "Trailer: X-Checksum",
            "-H",
            "Upgrade: websocket",
            "-H",
            "X-End-To-End: kept",
            "-H",
            "Host: evil.example",
            &up.url("/hop"),
        ],
    )
    .await;
    assert_eq!(c.written, "200", "{c:?}");

    let seen = &up.requests()[0].headers;
    for hop in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(hop),
            "{hop} reached the upstream: {:?}",
            header_names(seen)
        );
    }
    assert_eq!(seen["x-end-to-end"], "kept");
    assert_eq!(seen["host"], up.addr().to_string().as_str());

    let back = c.headers.to_ascii_lowercase();
    for hop in [
        "x-resp-hop:",
        "keep-alive:",
        "proxy-authenticate:",
        "connection: x-resp-hop",
    ] {
        assert!(!back.contains(hop), "{hop} reached the client:\n{back}");
    }
    assert!(back.contains("x-resp-end: kept"), "{back}");
    proxy.stop().await;
}

async fn post_file(proxy: SocketAddr, up: &Upstream, file: &Path, extra: &[&str]) -> String {
    let data = format!("@{}", file.display());
    let mut args = vec!["-w", "%{http_code}", "--data-binary", &data];
    args.extend_from_slice(extra);
    let url = up.url("/sha256");
    args.push(&url);
    let c = curl(proxy, &args).await;
    assert_eq!(c.written, "200", "{c:?}");
    c.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_upstream_intact_sized_or_chunked() {
    require_tool("sha256sum", "apt-get install -y coreutils");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    const LEN: usize = 5 << 20;
    let mut payload = common::Payload::new(LEN);
    std::fs::write(&file, payload.next_chunk(LEN).unwrap()).unwrap();
    let sum = common::run(std::process::Command::new("sha256sum").arg(&file));
    let expected_hex = String::from_utf8_lossy(&sum.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let expected = format!("{LEN} {expected_hex}\n");

    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;
    // Content-Length (curl also sends Expect: 100-continue for a body this big).
    assert_eq!(
        post_file(proxy.local_addr(), &up, &file, &[]).await,
        expected
    );
    // Chunked.
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    assert_eq!(
        post_file(proxy.local_addr(), &up, &file, &chunked).await,
        expected
    );
    let seen = up.requests();
    assert!(
        !seen[0].headers.contains_key("expect"),
        "{:?}",
        header_names(&seen[0].headers)
    );
    assert_eq!(seen[0].headers["content-length"], LEN.to_string().as_str());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_streamed_not_buffered() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;

    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        up.url("/slow"),
        up.addr()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    // The first chunk arrives while the upstream still holds the second.
    let head = read_until(&mut conn, b"first-chunk").await;
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(!head.contains("second-chunk"));
    up.release.notify_one();
    read_until(&mut conn, b"second-chunk").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_proxy_requests_get_400() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;
    for req in [
        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        format!(
            "GET https://{}/hello HTTP/1.1\r\nHost: x\r\n\r\n",
            up.addr()
        ),
    ] {
        let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
        conn.write_all(req.as_bytes()).await.unwrap();
        let got = read_until(&mut conn, b"\r\n\r\n").await;
        assert!(
            got.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(up.connections(), 0);
    proxy.stop().await;
}

// ---------------------------------------------------------------- CONNECT

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_allowed_target_tunnels_bytes_with_half_close() {
    let (echo, _) = spawn_echo().await;
    let proxy = start_proxy(&[echo.to_string()]).await;

    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let req = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let head = read_until(&mut conn, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200 Connection Established\r\n"),
        "{head}"
    );

    let mut payload = common::Payload::new(1 << 20);
    let data = payload.next_chunk(1 << 20).unwrap();
    let (mut r, mut w) = conn.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        // Half-close: the echo server sees EOF only through the tunnel.
        w.shutdown().await.unwrap();
        data
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    let data = writer.await.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_proxytunnel_gets_200_connection_established() {
    let up = Upstream::spawn().await;
    let proxy = start_proxy(&[up.addr().to_string()]).await;
    let c = curl(
        proxy.local_addr(),
        &[
            "-p",
            "-w",
            "%{http_connect} %{http_code}",
            &up.url("/hello"),
        ],
    )
    .await;
    assert_eq!(c.written, "200 200", "{c:?}");
    assert!(
        c.headers.contains("HTTP/1.1 200 Connection Established"),
        "{c:?}"
    );
    assert_eq!(c.body, "hello from upstream\n");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_denied_target_is_refused() {
    let (echo, echo_connections) = spawn_echo().await;
    let up = Upstream::spawn().await;
    // Only the HTTP upstream is allowed, not the echo server.
    let proxy = start_proxy(&[up.addr().to_string()]).await;

    let c = curl(
        proxy.local_addr(),
        &["-p", "-w", "%{http_connect}", &format!("http://{echo}/")],
    )
    .await;
    assert_eq!(c.exit, 56, "{c:?}");
    assert_eq!(c.written, "403", "{c:?}");
    assert_eq!(echo_connections.load(Ordering::SeqCst), 0);

    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    conn.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_until(&mut conn, b"allowlist").await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{got}");
    assert!(
        got.contains(&format!("host {echo} is not on the egress allowlist")),
        "{got}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_gets_502() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(&[closed.to_string()]).await;
    let c = curl(
        proxy.local_addr(),
        &["-p", "-w", "%{http_connect}", &format!("http://{closed}/")],
    )
    .await;
    assert_eq!(c.written, "502", "{c:?}");
    let c = curl(
        proxy.local_addr(),
        &["-w", "%{http_code}", &format!("http://{closed}/")],
    )
    .await;
    assert_eq!(c.written, "502", "{c:?}");
    assert!(
        c.body.starts_with(&format!("cannot connect to {closed}")),
        "{c:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dial_timeout_gets_504() {
    // A listener that never accepts, with its accept queue filled: Linux
    // drops further SYNs, so a connect hangs until its timeout.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filler connect failed: {e}"),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }

    init_logs();
    let proxy = Egress::start(EgressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: vec![addr.to_string()],
        dial_timeout: Duration::from_millis(500),
        ..EgressConfig::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let c = curl(
        proxy.local_addr(),
        &["-p", "-w", "%{http_connect}", &format!("http://{addr}/")],
    )
    .await;
    assert_eq!(c.written, "504", "{c:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    drop(listener);
    proxy.stop().await;
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn non_loopback_listen_address_needs_the_force_flag() {
    let config = EgressConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        allow: vec!["example.com".into()],
        ..EgressConfig::default()
    };
    let err = Egress::start(config.clone()).await.unwrap_err();
    assert!(matches!(err, EgressError::NotLoopback(_)), "{err:?}");
    let forced = Egress::start(EgressConfig {
        allow_non_loopback: true,
        ..config
    })
    .await
    .unwrap();
    assert!(forced.local_addr().ip().is_unspecified());
    forced.stop().await;
}

#[tokio::test]
async fn default_listen_address_is_localhost_3128() {
    let config = EgressConfig::default();
    assert_eq!(
        config.listen,
        "127.0.0.1:3128".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.dial_timeout, Duration::from_secs(10));
    assert!(config.allow.is_empty());
}

#[tokio::test]
async fn an_invalid_pattern_is_a_start_error() {
    let err = Egress::start(EgressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: vec!["ok.example".into(), "*.com".into()],
        ..EgressConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, EgressError::Pattern(_)), "{err:?}");
    assert!(err.to_string().contains("\"*.com\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_open_tunnels_at_the_deadline_and_frees_the_port() {
    let (echo, _) = spawn_echo().await;
    init_logs();
    let config = EgressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: vec![echo.to_string()],
        shutdown_timeout: Duration::from_millis(300),
        ..EgressConfig::default()
    };
    let proxy = Egress::start(config.clone()).await.unwrap();
    let addr = proxy.local_addr();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_until(&mut conn, b"\r\n\r\n").await;
    proxy.stop().await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel still open: {n:?}"
    );
    // Restartable on the same port.
    let again = Egress::start(EgressConfig {
        listen: addr,
        ..config
    })
    .await
    .unwrap();
    again.stop().await;
}
