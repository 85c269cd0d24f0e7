//! `MkioClient`: one authenticated request to MK.IO at a time, within the request budget,
//! with the outcome reported to the budget, logged and counted (metric names in `mkio`).

use super::budget::{scope_of, Budget, Class, Outcome, Scope};
use super::error::{parse_retry_after, MkioError};
use crate::config::{env_name, MkioConfig};
use anyhow::Context as _;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde_json::Value;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// A client of MK.IO's REST API. Cheap to clone; clones share the budget and connections.
#[derive(Clone)]
pub struct MkioClient {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    budget: Arc<Budget>,
    max_attempts: u32,
}

impl std::fmt::Debug for MkioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MkioClient")
            .field("base", &self.base.as_str())
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A successful answer: its status and body (`Null` when empty).
struct Answer {
    status: u16,
    body: Value,
}

impl MkioClient {
    /// A client with its own budget, sized by [`MkioConfig::budget`].
    pub fn new(config: &MkioConfig) -> anyhow::Result<Self> {
        let (read, write) = config.budget();
        Self::with_budget(
            config,
            Arc::new(Budget::new(read, write, config.max_backoff)),
        )
    }

    /// A client sharing `budget` with others (one budget per MK.IO organization). Warns now
    /// if the token has expired or expires within `mkio.token_expiry_warning`.
    pub fn with_budget(config: &MkioConfig, budget: Arc<Budget>) -> anyhow::Result<Self> {
        if config.token.is_empty() {
            anyhow::bail!(
                "mkio.token ({}) is not set: MK.IO needs a token",
                env_name("mkio.token")
            );
        }
        let base = Url::parse(&config.base_url).context("mkio.base_url is not a URL")?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
            .map_err(|_| {
                anyhow::anyhow!(
                    "mkio.token ({}) is not a valid header value",
                    env_name("mkio.token")
                )
            })?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mkio-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the MK.IO HTTP client")?;
        super::token::warn_if_expiring(config.token.expose(), config.token_expiry_warning);
        Ok(Self {
            http,
            base,
            authorization,
            budget,
            max_attempts: 1,
        })
    }

    /// Attempts per call (at least 1). A transient failure pauses the scope (through the
    /// budget) and the next attempt waits for it.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// GETs a path (with any query) below the base URL, or a URL on its origin.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, MkioError> {
        let url = self.resolve(path_and_query)?;
        Ok(self.send(Method::GET, url, None).await?.body)
    }

    /// PUTs `body`; returns the status (201 created, 200 replaced) and the answer's body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<(u16, Value), MkioError> {
        self.write(Method::PUT, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<(u16, Value), MkioError> {
        self.write(Method::PATCH, path, body).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), MkioError> {
        self.write(Method::POST, path, body).await
    }

    /// DELETEs; returns the status (200 deleted, 204 nothing to delete).
    pub async fn delete(&self, path: &str) -> Result<u16, MkioError> {
        let url = self.resolve(path)?;
        Ok(self.send(Method::DELETE, url, None).await?.status)
    }

    /// The state of a resource from its `/state` endpoint: `status.state`, else
    /// `properties.state`, else `properties.resourceState`, else `state`.
    pub async fn state(&self, resource_path: &str) -> Result<String, MkioError> {
        let path = format!("{}/state", resource_path.trim_end_matches('/'));
        let body = self.get(&path).await?;
        [
            "/status/state",
            "/properties/state",
            "/properties/resourceState",
            "/state",
        ]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| MkioError::Decode(format!("no state in the answer to GET {path}")))
    }

    async fn write(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Value), MkioError> {
        let url = self.resolve(path)?;
        let answer = self.send(method, url, Some(body)).await?;
        Ok((answer.status, answer.body))
    }

    /// The URL for a path below the base URL (`/api/...`), a link relative to it, or an
    /// absolute URL, which must be on the base URL's origin: the token goes nowhere else.
    pub fn resolve(&self, link: &str) -> Result<Url, MkioError> {
        let lower = link.get(..8).unwrap_or(link).to_ascii_lowercase();
        let url = if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(link).map_err(|e| MkioError::Decode(format!("bad URL {link:?}: {e}")))?
        } else if link.starts_with('/') && !link.starts_with("//") {
            let base = self.base.as_str().trim_end_matches('/');
            Url::parse(&format!("{base}{link}"))
                .map_err(|e| MkioError::Decode(format!("bad path {link:?}: {e}")))?
        } else {
            self.base
                .join(link)
                .map_err(|e| MkioError::Decode(format!("bad link {link:?}: {e}")))?
        };
        if url.origin() != self.base.origin() {
            return Err(MkioError::Refused(format!(
                "{link} is not on mkio.base_url's origin ({}); the token is sent nowhere else",
                self.base.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    /// Sends within the budget, retrying transient failures up to `max_attempts` in all.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Answer, MkioError> {
        let scope = scope_of(url.path());
        let class = Class::of_method(method.as_str());
        let mut attempt = 1;
        loop {
            self.budget.acquire(&scope, class).await;
            metrics::gauge!("mkio_budget_remaining", "scope" => scope.to_string(), "class" => class.as_str())
                .set(f64::from(self.budget.remaining(&scope, class)));
            let (result, retry_after) = self.attempt(&method, &url, body).await;
            self.budget.report(&scope, outcome(&result, retry_after));
            record(&scope, &method, &result);
            match result {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    let retry = e.is_transient() && attempt < self.max_attempts;
                    tracing::warn!(
                        method = %method,
                        path = url.path(),
                        status = %status_label(&Err(e.clone())),
                        reference = e.reference().unwrap_or("none"),
                        attempt,
                        retry,
                        error = %e,
                        "MK.IO request failed"
                    );
                    if !retry {
                        return Err(e);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One request; also returns any `Retry-After` of a failed answer.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
    ) -> (Result<Answer, MkioError>, Option<Duration>) {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return (Err(transport(&e)), None),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return (Err(transport(&e)), retry_after),
        };
        if !(200..300).contains(&status) {
            return (
                Err(MkioError::from_response(status, retry_after, &bytes)),
                retry_after,
            );
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                MkioError::Decode(format!(
                    "{method} {} answered {status} with non-JSON: {e}",
                    url.path()
                ))
            })
        };
        (body.map(|body| Answer { status, body }), retry_after)
    }
}

fn transport(e: &reqwest::Error) -> MkioError {
    if e.is_timeout() {
        return MkioError::Timeout;
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    MkioError::Transport(text)
}

/// What the budget learns from a result: only throttling, server errors, timeouts and
/// transport failures (counted as server errors) pause the scope; a 4xx is MK.IO answering.
fn outcome(result: &Result<Answer, MkioError>, retry_after: Option<Duration>) -> Outcome {
    match result {
        Err(MkioError::Throttled { .. }) => Outcome::Throttled { retry_after },
        Err(MkioError::Timeout) => Outcome::Timeout,
        Err(MkioError::Transport(_)) => Outcome::ServerError { retry_after: None },
        Err(e) if e.is_transient() => Outcome::ServerError { retry_after },
        _ => Outcome::Success,
    }
}

fn status_label(result: &Result<Answer, MkioError>) -> String {
    match result {
        Ok(answer) => answer.status.to_string(),
        Err(e) => match e.status() {
            Some(status) => status.to_string(),
            None if *e == MkioError::Timeout => "timeout".to_owned(),
            None => "error".to_owned(),
        },
    }
}

fn record(scope: &Scope, method: &Method, result: &Result<Answer, MkioError>) {
    let (scope, status) = (scope.to_string(), status_label(result));
    metrics::counter!("mkio_requests_total", "scope" => scope.clone(), "method" => method.to_string(), "status" => status.clone())
        .increment(1);
    match result {
        Ok(_) => {
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            metrics::gauge!("mkio_last_success_timestamp_seconds", "scope" => scope).set(now);
        }
        Err(e) => {
            if matches!(e, MkioError::Throttled { .. }) {
                metrics::counter!("mkio_throttled_total", "scope" => scope.clone()).increment(1);
            }
            metrics::counter!("mkio_errors_total", "scope" => scope, "status" => status, "code" => e.code().to_owned())
                .increment(1);
        }
    }
}
