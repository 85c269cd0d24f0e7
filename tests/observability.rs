//! Observability: `/metrics`, `/readyz`'s checks, request ids, secret-free logs, and the
//! OpenAPI document of `/v1` (served, checked in, and in step with the router).
//!
//! The metrics recorder is global to this test process: metric tests compare before/after
//! deltas, and only `metrics_*` tests send traffic that moves the counters they read.

mod common;

use common::{each_backend, job_event, Receiver, TestDb, TestServer, SECRET};
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use std::time::{Duration, Instant};

const API_TOKEN: &str = "obs-api-token-4f1c9a";

/// Regenerates docs/openapi.json when set.
const UPDATE_OPENAPI: &str = "MKIO_RELAY_UPDATE_OPENAPI";

async fn scrape(server: &TestServer) -> Scrape {
    let response = server
        .client
        .get(format!("{}/metrics", server.api))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200, "/metrics needs no token");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.expect("metrics body");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of a counter or gauge (0 when it has not been recorded yet).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a counter or gauge"),
        })
        .sum()
}

/// A histogram's observation count, from its `+Inf` bucket; panics when `name` is not
/// rendered as a Prometheus histogram.
fn observations(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .find_map(|s| match &s.value {
            Value::Histogram(buckets) if s.metric == name => buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .map(|b| b.count),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is not rendered as a histogram"))
}

/// Scrapes until `check` holds, or panics with `what` after 10 s.
async fn scrape_until(server: &TestServer, what: &str, check: impl Fn(&Scrape) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check(&scrape(server).await) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within 10s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn event_in(project: &str, id: &str, event_type: &str) -> serde_json::Value {
    json!({
        "specversion": "1.0", "id": id, "type": event_type,
        "source": format!("/api/v1/projects/{project}/media/transforms/t/jobs/{id}"),
        "time": "2025-03-14T09:09:47Z",
        "data": {"projectName": project, "state": "Processing",
                 "resource": {"name": id, "properties": {"state": "Processing"}}}
    })
}

async fn post_as(server: &TestServer, secret: &str, body: &serde_json::Value) -> u16 {
    server
        .client
        .post(format!("{}/webhooks/mkio", server.ingest))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .expect("POST webhook")
        .status()
        .as_u16()
}

#[tokio::test]
async fn metrics_count_ingest_events_webhooks_and_deliveries() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[("MKIO_RELAY_API_TOKEN", API_TOKEN)]).await;
    let project = "obs-metrics-project";
    let before = scrape(&server).await;
    let started_s = chrono::Utc::now().timestamp() as f64;

    let known = event_in(project, "m-1", "MediaKind.JobStarted");
    assert_eq!(post_as(&server, SECRET, &known).await, 200);
    assert_eq!(post_as(&server, SECRET, &known).await, 200, "duplicate");
    let odd = event_in(project, "m-2", "Vendor.Custom.Thing");
    assert_eq!(post_as(&server, SECRET, &odd).await, 200);
    assert_eq!(post_as(&server, "wrong-secret", &known).await, 401);
    let unsupported = server.post("x", "text/plain").await;
    assert_eq!(unsupported.status(), 415);

    let after = scrape(&server).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "mkio_relay_ingest_requests_total";
    assert_eq!(delta(requests, &[("outcome", "accepted")]), 2.0);
    assert_eq!(delta(requests, &[("outcome", "duplicate")]), 1.0);
    assert_eq!(delta(requests, &[("outcome", "401")]), 1.0);
    assert_eq!(delta(requests, &[("outcome", "415")]), 1.0);
    let events = "mkio_relay_events_total";
    assert_eq!(delta(events, &[("type", "MediaKind.JobStarted")]), 1.0);
    assert_eq!(delta(events, &[("type", "other")]), 1.0);
    assert_eq!(
        value(&after, events, &[("type", "Vendor.Custom.Thing")]),
        0.0,
        "unknown types never become a label"
    );
    let last = value(
        &after,
        "mkio_relay_last_webhook_timestamp_seconds",
        &[("project", project)],
    );
    assert!(
        last >= started_s - 1.0 && last <= started_s + 60.0,
        "last webhook at {last}, test started at {started_s}"
    );
    let latency = "mkio_relay_ingest_duration_seconds";
    let latency_before = if before.samples.iter().any(|s| s.metric == latency) {
        observations(&before, latency)
    } else {
        0.0
    };
    assert_eq!(observations(&after, latency) - latency_before, 5.0);
    assert!(observations(&after, "mkio_relay_commit_batch_events") >= 3.0);
    assert!(observations(&after, "mkio_relay_commit_duration_seconds") >= 3.0);
    // The dispatcher counts the outbox when it starts.
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "mkio_relay_delivery_queue_depth"));
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "mkio_relay_dead_letters"));

    // Deliveries by outcome, and their latency.
    let receiver = Receiver::start(vec![common::Reply::status(500)]).await;
    let (status, _) = send_json(
        &server,
        reqwest::Method::POST,
        "/v1/subscriptions",
        json!({"url": receiver.url, "filter": {"projects": [project]}, "retry_schedule": ["10ms"]}),
    )
    .await;
    assert_eq!(status, 201);
    let before = scrape(&server).await;
    let deliveries = "mkio_relay_deliveries_total";
    assert_eq!(
        post_as(
            &server,
            SECRET,
            &event_in(project, "m-3", "MediaKind.JobStarted")
        )
        .await,
        200
    );
    receiver.wait_delivered(1, Duration::from_secs(10)).await;
    let failed_before = value(&before, deliveries, &[("outcome", "failed")]);
    let delivered_before = value(&before, deliveries, &[("outcome", "delivered")]);
    scrape_until(&server, "a failed then a delivered attempt counted", |s| {
        value(s, deliveries, &[("outcome", "failed")]) == failed_before + 1.0
            && value(s, deliveries, &[("outcome", "delivered")]) == delivered_before + 1.0
    })
    .await;
    assert!(
        observations(
            &scrape(&server).await,
            "mkio_relay_delivery_duration_seconds"
        ) >= 2.0
    );

    // SSE clients and long-poll waiters, while they are connected.
    let gauge = |s: &Scrape, name: &str| value(s, name, &[]);
    let clients = gauge(&scrape(&server).await, "mkio_relay_sse_clients");
    let stream = server
        .client
        .get(format!("{}/v1/events/stream", server.api))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    scrape_until(&server, "the SSE client counted", |s| {
        gauge(s, "mkio_relay_sse_clients") == clients + 1.0
    })
    .await;
    drop(stream);
    scrape_until(&server, "the SSE client gone", |s| {
        gauge(s, "mkio_relay_sse_clients") == clients
    })
    .await;

    let waiters = gauge(&scrape(&server).await, "mkio_relay_waiters");
    let poll = {
        let client = server.client.clone();
        let url = format!(
            "{}/v1/jobs/{project}/t/m-4?wait=20s&until=Processing",
            server.api
        );
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    scrape_until(&server, "the waiter counted", |s| {
        gauge(s, "mkio_relay_waiters") == waiters + 1.0
    })
    .await;
    let job = event_in(project, "m-4", "MediaKind.JobStarted");
    assert_eq!(post_as(&server, SECRET, &job).await, 200);
    let _ = poll.await;
    scrape_until(&server, "the waiter gone", |s| {
        gauge(s, "mkio_relay_waiters") == waiters
    })
    .await;

    // Every metric this relay emits is described (HELP) and typed as intended.
    let text = server
        .client
        .get(format!("{}/metrics", server.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (name, kind) in [
        ("mkio_relay_ingest_requests_total", "counter"),
        ("mkio_relay_ingest_duration_seconds", "histogram"),
        ("mkio_relay_commit_batch_events", "histogram"),
        ("mkio_relay_events_total", "counter"),
        ("mkio_relay_last_webhook_timestamp_seconds", "gauge"),
        ("mkio_relay_deliveries_total", "counter"),
        ("mkio_relay_delivery_duration_seconds", "histogram"),
        ("mkio_relay_delivery_queue_depth", "gauge"),
        ("mkio_relay_dead_letters", "gauge"),
        ("mkio_relay_sse_clients", "gauge"),
        ("mkio_relay_waiters", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} as a {kind}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} described"
        );
    }
    receiver.stop();
    server.stop().await;
}

async fn send_json(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = server
        .client
        .request(method, format!("{}{}", server.api, path))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

async fn readyz(server: &TestServer, base: &str) -> (u16, serde_json::Value) {
    let r = server
        .client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

/// Runs one statement on the test database, beside the server.
async fn execute(db: &TestDb, sql: &str) {
    use sqlx::Connection;
    match db {
        TestDb::Sqlite { .. } => {
            let mut c = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        TestDb::Postgres { .. } => {
            let mut c = sqlx::PgConnection::connect(&db.url()).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
}

#[tokio::test]
async fn readyz_checks_database_migrations_and_writer_and_names_the_failure() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[("MKIO_RELAY_API_TOKEN", API_TOKEN)]).await;
        for base in [&server.ingest, &server.api] {
            let (status, body) = readyz(&server, base).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body["checks"],
                json!({"database": "ok", "migrations": "ok", "writer": "ok"})
            );
            assert_eq!(body["database"], db.backend());
        }

        // A newer relay migrated the database: this one is not ready.
        execute(
            &db,
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, X'00', 1)"
                .replace("X'00'", if db.backend() == "postgres" { "'\\x00'::bytea" } else { "X'00'" })
                .as_str(),
        )
        .await;
        for base in [&server.ingest, &server.api] {
            let (status, body) = readyz(&server, base).await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "schema_mismatch", "{body}");
            assert_eq!(body["error"]["checks"]["migrations"]["unknown"], json!([9999]));
            assert_eq!(body["error"]["checks"]["database"], "ok");
            assert_eq!(body["error"]["checks"]["writer"], "ok");
        }
        execute(&db, "DELETE FROM _sqlx_migrations WHERE version = 9999").await;
        assert_eq!(readyz(&server, &server.api).await.0, 200);

        // A migration this relay needs is not applied.
        execute(&db, "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 3").await;
        let (status, body) = readyz(&server, &server.api).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["checks"]["migrations"]["missing"], json!([3]));
        execute(&db, "UPDATE _sqlx_migrations SET success = TRUE WHERE version = 3").await;
        assert_eq!(readyz(&server, &server.api).await.0, 200);

        // /healthz only says the process answers.
        let health = server
            .client
            .get(format!("{}/healthz", server.api))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn readyz_fails_when_the_database_is_gone() {
    let Ok(admin) = std::env::var(common::POSTGRES_ENV) else {
        return; // Needs a database that can be taken away from a running relay.
    };
    let db = TestDb::postgres(&admin).await;
    let server = TestServer::start(&db, &[("MKIO_RELAY_DATABASE_BUSY_TIMEOUT", "1s")]).await;
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let (status, body) = readyz(&server, &server.ingest).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    assert_eq!(body["error"]["checks"]["database"], "unreachable");
    assert_eq!(body["error"]["checks"]["writer"], "ok");
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&server, &server.ingest).await.0 != 200 {
        assert!(Instant::now() < deadline, "ready again within 10s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_an_incoming_one_is_kept() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let requests = [
        server.client.get(format!("{}/healthz", server.ingest)),
        server.client.get(format!("{}/healthz", server.api)),
        server
            .client
            .get(format!("{}/no-such-route", server.ingest)),
        server.client.get(format!("{}/v1/events", server.api)),
        // Not a POST: this test must not move the ingest counters another test reads.
        server
            .client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/webhooks/mkio", server.ingest),
            )
            .header("webhook-request-origin", "mkio.example"),
    ];
    let mut generated = std::collections::HashSet::new();
    for request in requests {
        let keep = request.try_clone().unwrap();
        let r = request.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert!(generated.insert(id), "ids differ per request");
        let r = keep
            .header("x-request-id", "client-chosen-id-7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-request-id"], "client-chosen-id-7");
    }
    server.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Log lines, captured in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'w self) -> LogBuffer {
        self.clone()
    }
}

/// The relay's own logging set-up (JSON, debug, every crate) writes to a buffer; the other
/// tests of this binary log into it too, and must not leak their secrets either.
#[tokio::test]
async fn logs_at_debug_carry_request_ids_and_never_a_secret() {
    let webhook_secret = "hook-secret-a81f7c";
    let wrong_secret = "wrong-secret-5d02be";
    let subscription_secret = "whsec_b2JzLXN1YnNjcmlwdGlvbi1zZWNyZXQtOWU=";
    let db = TestDb::sqlite();
    let url = db.url();
    let config = mkio_relay::config::Config::load_with_env(
        None,
        &[
            ("MKIO_RELAY_DATABASE_URL", url.as_str()),
            ("MKIO_RELAY_WEBHOOK_SECRETS", webhook_secret),
            ("MKIO_RELAY_WEBHOOK_QUERY_PARAM", "access_token"),
            ("MKIO_RELAY_API_TOKEN", API_TOKEN),
            ("MKIO_RELAY_LOG_LEVEL", "debug"),
            ("MKIO_RELAY_LOG_FORMAT", "json"),
        ],
    )
    .expect("config");
    let buffer = LogBuffer::default();
    mkio_relay::telemetry::init_with(&config.log, buffer.clone());
    let server = TestServer::start_with(config).await;
    let client = server.client.clone();
    let api = server.api.clone();

    let event = |id: &str| job_event(id, "log-job", "Processing");
    let hook = format!("{}/webhooks/mkio", server.ingest);
    let sent = [
        client
            .post(&hook)
            .header("x-request-id", "log-test-request-1")
            .bearer_auth(webhook_secret)
            .json(&event("l-1")),
        client
            .post(&hook)
            .header("x-webhook-secret", webhook_secret)
            .json(&event("l-2")),
        client
            .post(format!("{hook}?access_token={webhook_secret}"))
            .json(&event("l-3")),
        client
            .post(format!("{hook}?access_token={wrong_secret}"))
            .json(&event("l-4")),
        client
            .post(&hook)
            .bearer_auth(wrong_secret)
            .json(&event("l-5")),
        client
            .post(&hook)
            .header("x-webhook-secret", wrong_secret)
            .body("not json"),
        client
            .get(format!("{api}/v1/events"))
            .bearer_auth(API_TOKEN),
        client
            .get(format!("{api}/v1/events"))
            .bearer_auth(wrong_secret),
        // Delivered to a closed port: the dispatcher fails, signing with the secret.
        client
            .post(format!("{api}/v1/subscriptions"))
            .bearer_auth(API_TOKEN)
            .json(
                &json!({"url": format!("http://127.0.0.1:{}/hook", free_port()),
                          "secret": subscription_secret, "retry_schedule": ["10ms"]}),
            ),
    ];
    let mut statuses = Vec::new();
    for request in sent {
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 401, 401, 401, 200, 401, 201],
        "each request did what it was meant to"
    );
    let subs: serde_json::Value = client
        .get(format!("{api}/v1/subscriptions"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sub_id = subs["subscriptions"][0]["id"].as_str().unwrap().to_owned();
    let rotated: serde_json::Value = client
        .patch(format!("{api}/v1/subscriptions/{sub_id}"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"rotate_secret": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rotated_secret = rotated["secret"]
        .as_str()
        .expect("rotated secret")
        .to_owned();
    let accepted = client
        .post(&hook)
        .bearer_auth(webhook_secret)
        .json(&event("l-6"))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    // Let a delivery attempt fail (and be recorded) before stopping.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: serde_json::Value = client
            .get(format!("{api}/v1/subscriptions/{sub_id}/deliveries"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["attempts"].as_i64() >= Some(1)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery attempt within 10s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();

    // The logs are worth checking: JSON, at debug, with each request's span.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finished = |id: &str| {
        lines.iter().any(|l| {
            l["fields"]["message"] == "request finished"
                && l["span"]["request_id"] == id
                && l["span"]["path"] == "/webhooks/mkio"
                && l["span"]["method"] == "POST"
                && l["fields"]["status"] == 200
                && l["fields"]["latency_ms"].is_number()
        })
    };
    assert!(finished("log-test-request-1"), "{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "request finished"
                && l["span"]["listener"] == "api"
                && l["fields"]["status"] == 401),
        "{logs}"
    );

    for secret in [
        webhook_secret,
        wrong_secret,
        API_TOKEN,
        subscription_secret,
        // The part of a whsec_ secret that is the key.
        subscription_secret.trim_start_matches("whsec_"),
        &rotated_secret,
        rotated_secret.trim_start_matches("whsec_"),
        "access_token=",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{}",
            logs.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn checked_in_openapi() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

#[tokio::test]
async fn openapi_document_is_served_openly_is_3_1_and_matches_docs_openapi_json() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[("MKIO_RELAY_API_TOKEN", API_TOKEN)]).await;
    let r = server
        .client
        .get(format!("{}/v1/openapi.json", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served without the API token");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let served = r.text().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let path = checked_in_openapi();
    if std::env::var_os(UPDATE_OPENAPI).is_some() {
        std::fs::write(&path, &served).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let first_difference = checked_in
        .lines()
        .zip(served.lines())
        .position(|(a, b)| a != b)
        .map_or(String::from("(lengths differ)"), |n| {
            format!("line {}", n + 1)
        });
    assert!(
        checked_in == served,
        "docs/openapi.json is not the document the API serves (first difference: \
         {first_difference}). Regenerate it with\n  \
         {UPDATE_OPENAPI}=1 cargo test --test observability openapi\nand commit the result."
    );
    server.stop().await;
}

/// Fills a documented path's `{params}` with values that reach the handler, and adds a query
/// parameter that handlers with a query refuse: the probe opens no stream or long-poll (whose
/// gauges another test reads).
fn concrete(path: &str) -> String {
    let path = path
        .replace("{kind}", "job")
        .replace("{id}", "1")
        .replace(['{', '}'], "");
    format!("{path}?probe=1")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[("MKIO_RELAY_API_TOKEN", API_TOKEN)]).await;
    let doc: serde_json::Value = server
        .client
        .get(format!("{}/v1/openapi.json", server.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let call = |method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        server
            .client
            .request(method, format!("{}{}", server.api, concrete(path)))
            .bearer_auth(API_TOKEN)
            .json(&json!({}))
            .timeout(Duration::from_secs(5))
            .send()
    };
    // The probe can tell a missing route from a missing resource.
    let missing = call("get", "/v1/no-such-thing").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["message"], "no such route");

    let mut operations = Vec::new();
    for (path, item) in paths {
        assert!(path.starts_with("/v1/"), "{path}");
        for method in METHODS {
            let documented = item.get(method).is_some();
            let r = call(method, path).await.unwrap();
            let status = r.status().as_u16();
            // A stream answers 200 at once; do not wait for its end.
            let body: serde_json::Value = if status == 200 && path.ends_with("/stream") {
                serde_json::Value::Null
            } else {
                r.json().await.unwrap_or_default()
            };
            if documented {
                operations.push(format!("{} {path}", method.to_uppercase()));
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                assert_ne!(
                    body["error"]["message"], "no such route",
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(status, 401, "{method} {path}: the token was sent");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
            }
        }
    }
    // Tokenless, a protected operation is refused and the document is not.
    let r = server
        .client
        .get(format!("{}/v1/events", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| METHODS.iter().filter_map(|m| item.get(*m)))
        .map(|op| op["operationId"].as_str().expect("operationId"))
        .collect();
    ids.sort_unstable();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "operationIds are unique");
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /v1/subscriptions/{id}",
            "DELETE /v1/watches/{id}",
            "GET /v1/events",
            "GET /v1/events/stream",
            "GET /v1/jobs",
            "GET /v1/jobs/{project}/{transform}/{job}",
            "GET /v1/openapi.json",
            "GET /v1/resources",
            "GET /v1/resources/{kind}/{project}/{name}",
            "GET /v1/subscriptions",
            "GET /v1/subscriptions/{id}",
            "GET /v1/subscriptions/{id}/deliveries",
            "GET /v1/watches",
            "GET /v1/watches/{id}",
            "PATCH /v1/subscriptions/{id}",
            "POST /v1/deliveries/{id}/retry",
            "POST /v1/subscriptions",
            "POST /v1/subscriptions/{id}/replay",
            "POST /v1/watches",
        ]
    );
    server.stop().await;
}
