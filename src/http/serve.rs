//! The API listener's HTTP/1.1 server, light on memory for long-held requests.
//!
//! hyper's server gives every connection a read buffer (grown to 16 KiB while it reads a request
//! head) and an 8 KiB write buffer, and keeps both for the connection's life: 20,000 long-polls
//! and event streams held open would cost half a GiB in buffers. Here a connection holds no
//! buffer while it waits for a request or for its response: the request head is read into a
//! buffer dropped once parsed, and a body-less `GET` or `HEAD` (every wait, stream and query) is
//! answered by writing the router's response straight to the socket, the head and every frame
//! ready at once in one write. Any other request (with a body, an upgrade, `Expect`, HTTP/1.0,
//! pipelined, a head this parser refuses) is handed, with the bytes already read, to hyper,
//! which then serves the rest of that connection, and answers malformed heads as usual.
//!
//! Shutdown: no new connection is accepted; an idle connection is closed; a request in flight
//! is answered (waits answer and streams end at shutdown) and its connection then closed.

use axum::body::{Body, HttpBody as _};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use axum::Router;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How the head buffer grows while a request head arrives.
const HEAD_CHUNK: usize = 1024;
/// A longer head goes to hyper, which reads on up to its own limit.
const MAX_HEAD: usize = 16 * 1024;
/// A head with more header lines goes to hyper (which takes up to 100).
const MAX_HEADERS: usize = 64;
/// From a request's first byte to its last header line; a slower client is disconnected.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames ready at once are written together, up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// No Nagle: a stream's small SSE writes must not wait for the client's delayed ACK.
pub fn no_delay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((mut tcp, _)) => {
                no_delay(&mut tcp);
                connections.spawn(connection(tcp, router.clone(), shutdown.clone()));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Most likely out of file descriptors: connections will close; try again soon.
                tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection: requests answered here one after the other until the client closes, asks to
/// close, or sends one that goes to hyper.
async fn connection(mut tcp: TcpStream, router: Router, shutdown: CancellationToken) {
    loop {
        let head = tokio::select! {
            head = read_head(&mut tcp) => head,
            () = shutdown.cancelled() => return,
        };
        let (request, keep_alive) = match head {
            Ok(Head::Lean(request, keep_alive)) => (request, keep_alive),
            Ok(Head::Other(read)) => {
                // Boxed: hyper's connection state would otherwise make every connection's
                // task as large as its own.
                Box::pin(with_hyper(tcp, read, router, shutdown)).await;
                return;
            }
            Ok(Head::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection ends while reading a request");
                return;
            }
        };
        match respond(&mut tcp, &router, *request, keep_alive, &shutdown).await {
            Ok(true) if !shutdown.is_cancelled() => {}
            Ok(_) => {
                let _ = tcp.shutdown().await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ends while answering a request");
                return;
            }
        }
    }
}

enum Head {
    /// The client closed the connection between requests (or stalled in a head).
    Closed,
    /// A body-less GET or HEAD answered here; whether the client keeps the connection.
    Lean(Box<Request<Body>>, bool),
    /// Anything else: the bytes read so far, for hyper.
    Other(Vec<u8>),
}

/// Waits for the next request head, holding no buffer until its first byte arrives.
async fn read_head(tcp: &mut TcpStream) -> io::Result<Head> {
    tcp.readable().await?;
    let reading = async {
        let mut read = Vec::with_capacity(HEAD_CHUNK);
        loop {
            if read.len() == read.capacity() {
                read.reserve(HEAD_CHUNK);
            }
            if tcp.read_buf(&mut read).await? == 0 {
                return Ok(Head::Closed);
            }
            match parse(&read) {
                Parsed::Partial if read.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Ok(Head::Other(read)),
                Parsed::Lean(request, keep_alive) => return Ok(Head::Lean(request, keep_alive)),
            }
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, reading).await {
        Ok(head) => head,
        Err(_) => {
            tracing::debug!("closing a connection whose request head took over 30 s");
            Ok(Head::Closed)
        }
    }
}

enum Parsed {
    Partial,
    Lean(Box<Request<Body>>, bool),
    Other,
}

/// Parses `read` as one whole body-less HTTP/1.1 GET or HEAD and nothing more.
fn parse(read: &[u8]) -> Parsed {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut lines);
    let len = match head.parse(read) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    // Bytes after the head are a pipelined request: hyper serves those in order.
    if len != read.len() || head.version != Some(1) {
        return Parsed::Other;
    }
    let method = match head.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let Some(Ok(uri)) = head.path.map(str::parse::<Uri>) else {
        return Parsed::Other;
    };
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    let mut keep_alive = true;
    for line in head.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line.name.as_bytes()),
            HeaderValue::from_bytes(line.value),
        ) else {
            return Parsed::Other;
        };
        let with_body = name == CONTENT_LENGTH && value != "0" || name == TRANSFER_ENCODING;
        if with_body || name == UPGRADE || name == EXPECT {
            return Parsed::Other;
        }
        if name == CONNECTION && has_token(&value, "close") {
            keep_alive = false;
        }
        headers.append(name, value);
    }
    let mut request = Box::new(Request::new(Body::empty()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Lean(request, keep_alive)
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// No body (HEAD, 204, 304, 1xx).
    Empty,
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, for bodies of unknown length (event streams).
    Chunked,
}

/// Answers `request` on `tcp`: `Ok(true)` when the connection can take another request.
async fn respond(
    tcp: &mut TcpStream,
    router: &Router,
    request: Request<Body>,
    keep_alive: bool,
    shutdown: &CancellationToken,
) -> io::Result<bool> {
    let head_only = request.method() == Method::HEAD;
    let (rd, mut wr) = tcp.split();
    // A client that goes away stops its request: a long-poll stops waiting.
    let response = tokio::select! {
        response = router.clone().oneshot(request) => response.unwrap_or_else(|e| match e {}),
        () = peer_closed(rd.as_ref()) => return Ok(false),
    };
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let exact = body.size_hint().exact();
    let framing = if no_body {
        Framing::Empty
    } else if parts.headers.contains_key(CONTENT_LENGTH) || exact.is_some() {
        Framing::Length
    } else {
        Framing::Chunked
    };
    let keep_alive = keep_alive && !shutdown.is_cancelled();
    let mut out = response_head(&parts, framing, exact, keep_alive)?;
    if framing == Framing::Empty {
        wr.write_all(&out).await?;
        return Ok(keep_alive);
    }

    loop {
        // Every frame ready now goes into this write; wait for the next only after writing.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    wr.write_all(&out).await?;
                    out = Vec::new();
                }
                tokio::select! {
                    frame = body.frame() => frame,
                    () = peer_closed(rd.as_ref()) => return Ok(false),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue, // trailers (none are sent) or an empty frame
            },
            Some(Err(e)) => {
                // Half a response went out: only closing the connection tells the client.
                tracing::warn!(error = %e, "response body failed; closing the connection");
                wr.write_all(&out).await?;
                return Ok(false);
            }
        };
        out.reserve(data.len() + 12);
        if framing == Framing::Chunked {
            write!(out, "{:x}\r\n", data.len())?;
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        if out.len() >= WRITE_BATCH {
            wr.write_all(&out).await?;
            out = Vec::new();
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    wr.write_all(&out).await?;
    Ok(keep_alive)
}

/// The status line and headers, with the framing and connection headers this server owns.
fn response_head(
    parts: &axum::http::response::Parts,
    framing: Framing,
    exact: Option<u64>,
    keep_alive: bool,
) -> io::Result<Vec<u8>> {
    let status = parts.status;
    let mut out = Vec::with_capacity(256);
    write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )?;
    for (name, value) in &parts.headers {
        if name == CONNECTION || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        write!(
            out,
            "date: {}\r\n",
            chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
        )?;
    }
    match (framing, exact) {
        (Framing::Length, Some(len)) if !parts.headers.contains_key(CONTENT_LENGTH) => {
            write!(out, "content-length: {len}\r\n")?;
        }
        (Framing::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Resolves when the client closes or resets the connection; never once it sends more bytes
/// (a request sent early: it is still there, and the bytes wait for their turn). Waits on the
/// socket's readiness, so it makes no system call until the client does something.
async fn peer_closed(tcp: &TcpStream) {
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        let mut byte = [std::mem::MaybeUninit::uninit()];
        let peek = || socket2::SockRef::from(tcp).peek(&mut byte);
        match tcp.try_io(Interest::READABLE, peek) {
            Ok(0) => return,
            Ok(_) => std::future::pending::<()>().await,
            // Readiness was stale and is now cleared: wait for the client again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Serves the rest of the connection with hyper, starting with the bytes already read.
async fn with_hyper(tcp: TcpStream, read: Vec<u8>, router: Router, shutdown: CancellationToken) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        router.clone().oneshot(request.map(Body::new))
    });
    let io = TokioIo::new(Replay { read, at: 0, tcp });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The socket, with the bytes already read from it put back in front.
struct Replay {
    read: Vec<u8>,
    at: usize,
    tcp: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.read[this.at..];
        if rest.is_empty() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.at += n;
        if this.at == this.read.len() {
            this.read = Vec::new();
            this.at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::sse::{Event, Sse};
    use axum::routing::{get, post};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncBufReadExt;

    /// Counts the long-polls in flight: a guard lives in the handler's future.
    struct Waiting(Arc<AtomicUsize>);
    impl Drop for Waiting {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn start() -> (std::net::SocketAddr, Arc<AtomicUsize>, CancellationToken) {
        let waiting = Arc::new(AtomicUsize::new(0));
        let w = waiting.clone();
        let router = Router::new()
            .route(
                "/hello",
                get(|| async { axum::Json(serde_json::json!({"hi": 1})) }),
            )
            .route(
                "/wait",
                get(move || {
                    let w = w.clone();
                    async move {
                        w.fetch_add(1, Ordering::SeqCst);
                        let _guard = Waiting(w);
                        std::future::pending::<()>().await;
                    }
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    let events = futures_util::stream::iter(
                        (1..=3).map(|i| Ok::<_, Infallible>(Event::default().data(i.to_string()))),
                    );
                    Sse::new(events)
                }),
            )
            .route("/echo", post(|body: String| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, router, shutdown.clone()));
        (addr, waiting, shutdown)
    }

    /// Reads one response (head and body, chunked or by length) from `conn`.
    async fn response(conn: &mut tokio::io::BufReader<TcpStream>) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(5), read_response(conn, true))
            .await
            .expect("a whole response within 5 s")
    }

    async fn read_response(
        conn: &mut tokio::io::BufReader<TcpStream>,
        with_body: bool,
    ) -> (String, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                conn.read_line(&mut line).await.unwrap() > 0,
                "closed: {head}"
            );
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if with_body && lower.contains("transfer-encoding: chunked") {
            loop {
                let mut size = String::new();
                conn.read_line(&mut size).await.unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .filter(|_| with_body)
        {
            let mut buf = vec![0; len.trim().parse().unwrap()];
            conn.read_exact(&mut buf).await.unwrap();
            body = buf;
        }
        (head, String::from_utf8(body).unwrap())
    }

    /// Sends `request` on `conn` and reads its whole response.
    async fn ask(conn: &mut tokio::io::BufReader<TcpStream>, request: &[u8]) -> (String, String) {
        conn.write_all(request).await.unwrap();
        response(conn).await
    }

    async fn connect(addr: std::net::SocketAddr) -> tokio::io::BufReader<TcpStream> {
        tokio::io::BufReader::new(TcpStream::connect(addr).await.unwrap())
    }

    async fn closed(conn: &mut tokio::io::BufReader<TcpStream>) -> bool {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest));
        matches!(read.await, Ok(Ok(0)))
    }

    #[tokio::test]
    async fn keep_alive_gets_then_a_post_on_one_connection() {
        let (addr, _, _) = start().await;
        let mut conn = connect(addr).await;
        for _ in 0..2 {
            let (head, body) = ask(&mut conn, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(head.contains("content-length: 8\r\n"), "{head}");
            assert!(head.contains("date: "), "{head}");
            assert_eq!(body, r#"{"hi":1}"#);
        }
        // A request with a body goes to hyper, which serves the rest of the connection.
        let post = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(ask(&mut conn, post).await.1, "hello");
        let get = b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(ask(&mut conn, get).await.1, r#"{"hi":1}"#);
    }

    #[tokio::test]
    async fn a_head_in_pieces_pipelined_requests_and_http_1_0() {
        let (addr, _, _) = start().await;
        let mut conn = connect(addr).await;
        conn.write_all(b"GET /hel").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.write_all(b"lo HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut conn).await.1, r#"{"hi":1}"#);
        // Two requests in one write: both answered, in order.
        conn.write_all(
            b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\nPOST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok",
        )
        .await
        .unwrap();
        assert_eq!(response(&mut conn).await.1, r#"{"hi":1}"#);
        assert_eq!(response(&mut conn).await.1, "ok");

        let mut old = connect(addr).await;
        old.write_all(b"GET /hello HTTP/1.0\r\n\r\n").await.unwrap();
        let mut all = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), old.read_to_string(&mut all));
        read.await.expect("closed within 5 s").unwrap();
        assert!(all.starts_with("HTTP/1.0 200 OK\r\n"), "{all}");
        assert!(all.ends_with(r#"{"hi":1}"#), "{all}");
    }

    #[tokio::test]
    async fn head_close_stream_garbage_and_unknown_routes() {
        let (addr, _, _) = start().await;
        let mut conn = connect(addr).await;
        conn.write_all(b"HEAD /hello HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut conn, false).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");

        // No body followed the HEAD: the next response's status line comes first.
        let (head, body) = ask(&mut conn, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert_eq!(body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");

        let close = b"GET /nowhere HTTP/1.1\r\nhost: x\r\nConnection: close\r\n\r\n";
        let (head, _) = ask(&mut conn, close).await;
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(
            closed(&mut conn).await,
            "the server closes after `Connection: close`"
        );

        let mut bad = connect(addr).await;
        let (head, _) = ask(&mut bad, b"GET /hello HTTP/1.1\r\nno colon here\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_its_wait_and_shutdown_closes_idle_connections() {
        let (addr, waiting, shutdown) = start().await;
        let mut waiter = connect(addr).await;
        waiter
            .write_all(b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let until = |want: usize| {
            let waiting = waiting.clone();
            async move {
                for _ in 0..500 {
                    if waiting.load(Ordering::SeqCst) == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(until(1).await, "the wait started");
        drop(waiter);
        assert!(until(0).await, "the wait ended when its client left");

        let mut idle = connect(addr).await;
        ask(&mut idle, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
        shutdown.cancel();
        assert!(
            closed(&mut idle).await,
            "an idle connection is closed at shutdown"
        );
    }
}
