//! Hostile input at the ingest port: malformed fixtures, random bytes, invalid UTF-8, deep
//! nesting, huge headers, bodies that never finish, oversized bodies and a flood of wrong
//! credentials. Each gets its 4xx with a JSON error body (except where hyper answers before the
//! relay's code: 431 for oversized headers, with an empty body), nothing is stored, and the
//! daemon stays healthy and still accepts a valid event.
//!
//! SQLite only: every case here is rejected before the store is touched.

mod common;

use common::{fixture, job_event, TestDb, TestServer, SECRET};
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The body timeout the tests set: short, so a stalled body is answered quickly.
const BODY_TIMEOUT: Duration = Duration::from_secs(1);
/// The body limit the tests set (smaller than the default, to test it cheaply).
const BODY_LIMIT: usize = 64 * 1024;
/// Bound on reading a raw HTTP answer.
const RAW_READ_LIMIT: Duration = Duration::from_secs(10);
const NESTING: usize = 10_000;
const WRONG_CREDENTIALS: usize = 2_000;
const FLOOD_CONCURRENCY: usize = 32;
const RANDOM_BODIES: usize = 300;
/// Fixed seed: a failure can be replayed.
const SEED: u64 = 0x6d6b_696f;

async fn start(db: &TestDb) -> TestServer {
    let timeout = format!("{}ms", BODY_TIMEOUT.as_millis());
    let limit = BODY_LIMIT.to_string();
    TestServer::start(
        db,
        &[
            ("MKIO_RELAY_INGEST_BODY_TIMEOUT", &timeout),
            ("MKIO_RELAY_INGEST_BODY_LIMIT", &limit),
        ],
    )
    .await
}

/// A 4xx answer whose body is the relay's JSON error; returns the status and the error code.
async fn json_error(resp: reqwest::Response, what: &str) -> (u16, String) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let text = resp.text().await.expect("body");
    assert!((400..500).contains(&status), "{what}: {status} {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type}"
    );
    error_code(&text, what).map_or_else(
        || panic!("{what}: not an error body: {text}"),
        |c| (status, c),
    )
}

fn error_code(text: &str, what: &str) -> Option<String> {
    let body: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    body["error"]["message"].as_str()?;
    Some(body["error"]["code"].as_str()?.to_owned())
}

/// Nothing stored, `/healthz` 200, and a valid event still accepted and stored once.
async fn assert_unharmed(server: &TestServer) {
    assert!(
        server.all_events().await.is_empty(),
        "a bad request stored something"
    );
    let health = server
        .client
        .get(format!("{}/healthz", server.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let event = job_event("valid-after-abuse", "job-ok", "Finished").to_string();
    let resp = server.post(event, "application/json").await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let events = server.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "valid-after-abuse");
}

fn ingest_addr(server: &TestServer) -> String {
    server.ingest.trim_start_matches("http://").to_owned()
}

/// What a raw HTTP/1.1 exchange returned: status, head and body, read until the server closed
/// the connection (a hang fails after [`RAW_READ_LIMIT`]).
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

fn read_answer(mut tcp: TcpStream) -> RawAnswer {
    tcp.set_read_timeout(Some(RAW_READ_LIMIT)).unwrap();
    let mut bytes = Vec::new();
    tcp.read_to_end(&mut bytes)
        .expect("the server answers and closes the connection");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    RawAnswer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn malformed_fixtures_are_rejected_with_json_errors_and_nothing_is_stored() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        let body = fixture(&format!("malformed/{name}"));
        for ct in [
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        ] {
            let what = format!("{name} as {ct}");
            let (status, code) = json_error(server.post(body.clone(), ct).await, &what).await;
            assert_eq!(status, 400, "{what}: {code}");
        }
        let (status, _) = json_error(server.post(body.clone(), "text/plain").await, name).await;
        assert_eq!(status, 415, "{name} as text/plain");
    }
    assert_unharmed(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn random_bytes_and_invalid_utf8_are_rejected() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let types = [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/octet-stream",
    ];
    for i in 0..RANDOM_BODIES {
        let len = rng.gen_range(0..2048);
        let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let ct = types[i % types.len()];
        json_error(
            server.post(body, ct).await,
            &format!("random body {i} as {ct}"),
        )
        .await;
    }
    // A valid event with invalid UTF-8 in a string, in a key, and after the JSON.
    let valid = job_event("utf8-probe", "job-x", "Finished").to_string();
    for (what, bad) in [
        (
            "id",
            valid
                .replace("utf8-probe", "utf8-\u{1}probe")
                .replace('\u{1}', "\u{fffd}"),
        ),
        ("raw", valid.clone()),
    ] {
        let mut bytes = bad.into_bytes();
        let at = bytes.windows(5).position(|w| w == b"probe").unwrap();
        bytes.insert(at, 0xff);
        json_error(
            server.post(bytes, "application/json").await,
            &format!("invalid UTF-8 in {what}"),
        )
        .await;
    }
    // What a reader of the log would fail to parse back, in places the relay skips or keeps
    // as text without reading: each was once stored, and the log answered 503 from then on.
    let spliced = |marker: &str, insert: &[u8]| -> Vec<u8> {
        let mut bytes = valid.clone().into_bytes();
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .unwrap();
        bytes.splice(at..at, insert.iter().copied());
        bytes
    };
    for (what, bytes) in [
        (
            "invalid UTF-8 in an extension attribute",
            spliced("\"specversion\"", b"\"ext\":\"\xff\","),
        ),
        (
            "invalid UTF-8 in a data field the relay skips",
            spliced("\"state\"", b"\"note\":\"\xfe\","),
        ),
        ("a lone high surrogate", spliced("Finished", br"\ud800")),
        ("a lone low surrogate", spliced("Finished", br"\udc00")),
        (
            "a high surrogate before a non-surrogate",
            spliced("Finished", br"\ud800\u0041"),
        ),
    ] {
        json_error(server.post(bytes, "application/json").await, what).await;
    }
    let mut trailing = valid.clone().into_bytes();
    trailing.extend_from_slice(&[0xc3, 0x28]);
    json_error(
        server.post(trailing, "application/json").await,
        "trailing bytes",
    )
    .await;
    // A content type that is not text.
    let resp = server
        .client
        .post(format!("{}/webhooks/mkio", server.ingest))
        .bearer_auth(SECRET)
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(b"application/\xffjson").unwrap(),
        )
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    let (status, _) = json_error(resp, "binary content type").await;
    assert_eq!(status, 415);
    // Binary mode with an invalid UTF-8 header attribute.
    let resp = server
        .client
        .post(format!("{}/webhooks/mkio", server.ingest))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-type", "MediaKind.JobFinished")
        .header("ce-source", "/api/v1/projects/p/transforms/t/jobs/j")
        .header(
            "ce-id",
            reqwest::header::HeaderValue::from_bytes(b"id-\xff").unwrap(),
        )
        .body(r#"{"state":"Finished"}"#)
        .send()
        .await
        .unwrap();
    json_error(resp, "binary-mode header with invalid UTF-8").await;
    assert_unharmed(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn ten_thousand_deep_nesting_is_rejected() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let arrays = format!("{}{}", "[".repeat(NESTING), "]".repeat(NESTING));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(NESTING), "}".repeat(NESTING));
    let envelope = |data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"deep","type":"MediaKind.JobFinished","source":"/api/v1/projects/p/transforms/t/jobs/j","data":{data}}}"#
        )
    };
    for (what, body, ct) in [
        ("arrays as the body", arrays.clone(), "application/json"),
        (
            "arrays as a batch",
            arrays.clone(),
            "application/cloudevents-batch+json",
        ),
        ("objects as the body", objects.clone(), "application/json"),
        ("arrays in data", envelope(&arrays), "application/json"),
        (
            "objects in data",
            envelope(&objects),
            "application/cloudevents+json",
        ),
        (
            "objects in a batch",
            format!("[{}]", envelope(&objects)),
            "application/json",
        ),
    ] {
        let (status, _) = json_error(server.post(body, ct).await, what).await;
        assert_eq!(status, 400, "{what}");
    }
    assert_unharmed(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn huge_headers_and_bodies_are_refused() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let valid = job_event("huge", "job-h", "Finished").to_string();
    // 100 KiB in one header: within hyper's buffer, so the relay's own code answers it (the
    // header is not a credential, so the secret still decides; a wrong one gets 401).
    let big = "x".repeat(100 * 1024);
    let resp = server
        .client
        .post(format!("{}/webhooks/mkio", server.ingest))
        .bearer_auth(format!("{SECRET}{big}"))
        .header("content-type", "application/json")
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    let (status, _) = json_error(resp, "100 KiB authorization header").await;
    assert_eq!(status, 401);
    // 1 MiB of headers: hyper refuses them before any handler runs, with 431 and no body.
    let addr = ingest_addr(&server);
    let junk = format!("x-junk: {}\r\n", "y".repeat(8 * 1024)).repeat(128);
    let request = format!(
        "POST /webhooks/mkio HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {SECRET}\r\n{junk}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{valid}",
        valid.len()
    );
    // Raw socket work runs off the runtime that serves the relay.
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(&addr).unwrap();
        // The server may close while we still write; what it answered is what matters.
        let _ = tcp.write_all(request.as_bytes());
        read_answer(tcp)
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 431, "{}", answer.head);
    // Declared too large: 413 before the body is read. Chunked and too large: 413 too.
    let resp = server
        .post(vec![b' '; BODY_LIMIT + 1], "application/json")
        .await;
    let (status, code) = json_error(resp, "declared oversized body").await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    let chunks = futures_util::stream::iter(
        (0..(BODY_LIMIT / 1024 + 2)).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])),
    );
    let resp = server
        .post(reqwest::Body::wrap_stream(chunks), "application/json")
        .await;
    let (status, _) = json_error(resp, "chunked oversized body").await;
    assert_eq!(status, 413);
    // Other routes and methods answer JSON too.
    let resp = server
        .client
        .get(format!("{}/webhooks/mkio", server.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(resp, "GET on the webhook route").await.0, 405);
    let resp = server
        .client
        .post(format!("{}/nowhere", server.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(resp, "unknown route").await.0, 404);
    assert_unharmed(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408_after_the_body_timeout_and_is_dropped() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let addr = ingest_addr(&server);
    let valid = job_event("stalled", "job-s", "Finished").to_string();
    let head = |len: usize, auth: &str| {
        format!(
            "POST /webhooks/mkio HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {auth}\r\n\
             content-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    // Stalled after half the body; and a trickle that would finish, but too late. Neither
    // asks for `connection: close`, so reading to the end proves the server dropped them.
    let stalled = tokio::task::spawn_blocking({
        let (addr, head, valid) = (addr.clone(), head(valid.len(), SECRET), valid.clone());
        move || {
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.write_all(head.as_bytes()).unwrap();
            tcp.write_all(&valid.as_bytes()[..valid.len() / 2]).unwrap();
            let sent = Instant::now();
            (read_answer(tcp), sent.elapsed())
        }
    });
    let trickle = tokio::task::spawn_blocking({
        let (addr, head, valid) = (addr.clone(), head(valid.len(), SECRET), valid.clone());
        move || {
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.write_all(head.as_bytes()).unwrap();
            let sent = Instant::now();
            for chunk in valid.as_bytes().chunks(valid.len() / 8 + 1) {
                std::thread::sleep(BODY_TIMEOUT / 4);
                if tcp.write_all(chunk).is_err() {
                    break;
                }
            }
            (read_answer(tcp), sent.elapsed())
        }
    });
    for (what, handle) in [("stalled", stalled), ("trickle", trickle)] {
        let (answer, took) = handle.await.unwrap();
        assert_eq!(answer.status, 408, "{what}: {}", answer.head);
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("application/json"),
            "{what}"
        );
        assert_eq!(
            error_code(&answer.body, what).as_deref(),
            Some("body_timeout")
        );
        assert!(took >= BODY_TIMEOUT, "{what}: answered after {took:?}");
        assert!(took < BODY_TIMEOUT * 4, "{what}: answered after {took:?}");
    }
    // Without the secret a stalled body is refused at once, before the body is waited for.
    let mut tcp = TcpStream::connect(&addr).unwrap();
    tcp.write_all(head(valid.len(), "wrong").as_bytes())
        .unwrap();
    let sent = Instant::now();
    let answer = read_answer(tcp);
    assert_eq!(answer.status, 401);
    assert!(sent.elapsed() < BODY_TIMEOUT, "{:?}", sent.elapsed());
    assert_unharmed(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_wrong_credentials_is_refused_and_stores_nothing() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let url = format!("{}/webhooks/mkio", server.ingest);
    let statuses = futures_util::stream::iter(0..WRONG_CREDENTIALS)
        .map(|i| {
            let (client, url) = (server.client.clone(), url.clone());
            async move {
                let body = job_event(&format!("flood-{i}"), "job-f", "Finished").to_string();
                let req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                let req = match i % 6 {
                    0 => req,
                    1 => req.bearer_auth(format!("{SECRET}x")),
                    2 => req.header("x-webhook-secret", &SECRET[1..]),
                    3 => req.basic_auth("mkio", Some(SECRET)),
                    4 => req.header("authorization", "Bearer "),
                    _ => req.bearer_auth(SECRET.to_uppercase()),
                };
                json_error(req.send().await.expect("request"), &format!("flood {i}")).await
            }
        })
        .buffer_unordered(FLOOD_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(statuses.len(), WRONG_CREDENTIALS);
    assert!(
        statuses
            .iter()
            .all(|(s, c)| *s == 401 && c == "unauthorized"),
        "{:?}",
        statuses.iter().find(|(s, _)| *s != 401)
    );
    assert_unharmed(&server).await;
    server.stop().await;
}
