//! Test harness: temporary databases (SQLite files, and fresh Postgres databases when
//! `MKIO_RELAY_TEST_POSTGRES_URL` is set), the real server on port 0, and fixtures.
#![allow(dead_code)]

use mkio_relay::app::{self, Listeners};
use mkio_relay::config::Config;
use sqlx::Connection;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The webhook secret every test server accepts.
pub const SECRET: &str = "test-webhook-secret";

/// Set to a Postgres server URL (any database) to run every backend-parametrised test on
/// Postgres too. CI sets it; when it is set, a Postgres failure fails the tests.
pub const POSTGRES_ENV: &str = "MKIO_RELAY_TEST_POSTGRES_URL";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// A database for one test, removed when dropped.
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { dir } => format!("sqlite:{}", dir.path().join("relay.db").display()),
            Self::Postgres { admin_url, name } => with_database(admin_url, name),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    pub fn sqlite() -> Self {
        Self::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub async fn postgres(admin_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "mkio_relay_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={admin_url} is unreachable: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        Self::Postgres {
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Self::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime; a separate thread gets its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        })
        .join();
    }
}

/// Replaces the database name in a Postgres URL.
fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("postgres URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// Runs `test` once per backend: SQLite always, Postgres when configured.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    test(TestDb::sqlite()).await;
    if let Ok(url) = std::env::var(POSTGRES_ENV) {
        test(TestDb::postgres(&url).await).await;
    }
}

/// A running mkio-relay on port 0, stopped with [`TestServer::stop`].
pub struct TestServer {
    pub ingest: String,
    pub api: String,
    pub client: reqwest::Client,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Starts the real server on `db` with the test secret and `extra` settings.
    pub async fn start(db: &TestDb, extra: &[(&str, &str)]) -> Self {
        let url = db.url();
        let mut vars = vec![
            ("MKIO_RELAY_DATABASE_URL", url.as_str()),
            ("MKIO_RELAY_WEBHOOK_SECRETS", SECRET),
            ("MKIO_RELAY_LOG_LEVEL", "warn"),
        ];
        vars.extend_from_slice(extra);
        let config = Config::load_with_env(None, &vars).expect("test config");
        Self::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Self {
        let ingest = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ingest_url = format!("http://{}", ingest.local_addr().expect("addr"));
        let api_url = format!("http://{}", api.local_addr().expect("addr"));
        let token = CancellationToken::new();
        let task = tokio::spawn(app::run(config, Listeners { ingest, api }, token.clone()));
        let server = Self {
            ingest: ingest_url,
            api: api_url,
            client: reqwest::Client::new(),
            token,
            task,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.ingest))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(!self.task.is_finished(), "server exited during start-up");
            assert!(
                tokio::time::Instant::now() < deadline,
                "server not ready within 20s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops within 20s")
            .expect("server task")
            .expect("server ran cleanly");
    }

    /// POSTs `body` to the webhook route with the test secret.
    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/webhooks/mkio", self.ingest))
            .bearer_auth(SECRET)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_fixture(&self, name: &str) -> reqwest::Response {
        self.post(fixture(name), "application/json").await
    }

    /// GETs an API path and returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{}", self.api, path))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// Every event in the log.
    pub async fn all_events(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (status, body) = self
                .get(&format!("/v1/events?after={after}&limit=1000"))
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body["events"].as_array().expect("events").clone();
            if page.is_empty() {
                return out;
            }
            after = body["next_after"].as_i64().expect("next_after");
            out.extend(page);
        }
    }
}

/// One server-sent event as a test client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A minimal SSE client over a streaming response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(client: &reqwest::Client, url: &str, last_event_id: Option<i64>) -> Self {
        let mut req = client.get(url);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = req.send().await.expect("connect stream");
        assert_eq!(response.status(), 200, "stream status");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ends or
    /// `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk.expect("stream read") {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }
}

/// A CloudEvent for job `job` of project `p`, transform `t`, in `state`.
pub fn job_event(id: &str, job: &str, state: &str) -> serde_json::Value {
    let event_type = if state == "Processing" {
        "MediaKind.JobStarted"
    } else {
        "MediaKind.JobFinished"
    };
    serde_json::json!({
        "specversion": "1.0", "id": id, "type": event_type,
        "source": format!("/api/v1/projects/p/transforms/t/jobs/{job}"),
        "time": "2025-03-14T09:09:47Z",
        "data": {"projectName": "p", "previousState": "Queued", "state": state,
                 "resource": {"name": job, "properties": {"state": state}}}
    })
}

/// What the test receiver answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<&'static str>,
    pub delay: Duration,
    pub location: Option<&'static str>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            location: None,
        }
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("delivery body is JSON")
    }

    /// Whether one `v1` entry is HMAC-SHA256 of `{id}.{timestamp}.{body}` under `secret`,
    /// computed here independently of the relay's signing code.
    pub fn signed_with(&self, secret: &str) -> bool {
        use base64::Engine;
        use hmac::Mac;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
            .expect("base64 secret");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", self.webhook_id, self.timestamp).as_bytes());
        mac.update(&self.body);
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        self.signature.split(' ').any(|s| s == expected)
    }
}

/// A webhook receiver on port 0 that answers from a script (then 200) and records everything.
pub struct Receiver {
    pub url: String,
    script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Reply>>>,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Vec<Reply>) -> Self {
        Self::start_on("127.0.0.1:0", script).await
    }

    pub async fn start_on(addr: &str, script: Vec<Reply>) -> Self {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        type Shared = (
            std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Reply>>>,
            std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
        );
        async fn hook(
            State((script, received)): State<Shared>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            let reply = script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Reply::status(200));
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            received.lock().unwrap().push(Received {
                webhook_id: header("webhook-id"),
                timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                signature: header("webhook-signature"),
                body: body.to_vec(),
                at: std::time::Instant::now(),
                answered: reply.status,
            });
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let mut response = StatusCode::from_u16(reply.status).unwrap().into_response();
            if let Some(ra) = reply.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", ra.parse().unwrap());
            }
            if let Some(loc) = reply.location {
                response
                    .headers_mut()
                    .insert("location", loc.parse().unwrap());
            }
            response
        }
        let script = std::sync::Arc::new(std::sync::Mutex::new(script.into_iter().collect()));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state((script.clone(), received.clone()));
        let listener = TcpListener::bind(addr).await.expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            script,
            received,
            task,
        }
    }

    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    /// Waits until at least `n` requests were answered 2xx, or panics after `timeout`.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} deliveries within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops answering (connections are refused from now on).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl TestServer {
    /// POSTs JSON to an API path; returns status and JSON body (Null when empty).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.request(method, format!("{}{}", self.api, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            if text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text).expect("JSON")
            },
        )
    }

    /// Creates a subscription and returns (id, secret).
    pub async fn subscribe(&self, body: serde_json::Value) -> (String, String) {
        let (status, created) = self
            .send(reqwest::Method::POST, "/v1/subscriptions", Some(body))
            .await;
        assert_eq!(status, 201, "{created}");
        (
            created["id"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }
}
