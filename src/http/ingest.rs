//! The ingest router: `POST /webhooks/mkio[/{rule}]` (authenticate, decode, store, then 2xx),
//! the CloudEvents abuse-protection handshake on `OPTIONS`, and health.

use super::error::{no_route, wrong_method, ApiError};
use super::health::{self, Health};
use crate::config::{Config, SignatureMode};
use crate::domain::time::now_ms;
use crate::ingest::auth::{authenticate, Credentials, SecretSet};
use crate::ingest::decode::{decode, DecodeError};
use crate::ingest::signature::{self, SignedHeaders};
use crate::ingest::writer::{SubmitError, WriterHandle};
use crate::store::Appended;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use std::sync::Arc;

/// What the ingest handlers need.
pub struct IngestState {
    pub writer: WriterHandle,
    pub secrets: SecretSet,
    pub query_param: Option<String>,
    pub signature_mode: SignatureMode,
    pub signature_keys: Vec<Vec<u8>>,
    pub signature_tolerance_secs: i64,
    pub body_limit: usize,
    /// How long the body may take to arrive once the headers have (408 after that).
    pub body_timeout: std::time::Duration,
    pub retry_after_secs: u64,
}

impl IngestState {
    pub fn from_config(config: &Config, writer: WriterHandle) -> Self {
        let w = &config.webhook;
        Self {
            writer,
            secrets: SecretSet::new(&w.secrets),
            query_param: Some(w.query_param.clone()).filter(|p| !p.is_empty()),
            signature_mode: w.signature_mode,
            signature_keys: w
                .signature_secrets
                .iter()
                // Validated at start-up, so every secret decodes.
                .filter_map(|s| signature::decode_secret(s.expose()).ok())
                .collect(),
            signature_tolerance_secs: w.signature_tolerance.as_secs() as i64,
            body_limit: config.ingest.body_limit,
            body_timeout: config.ingest.body_timeout,
            retry_after_secs: config.ingest.retry_after.as_secs().max(1),
        }
    }
}

pub fn router(state: Arc<IngestState>, health: Health) -> Router {
    let router = Router::new()
        .route("/webhooks/mkio", post(measured).options(handshake))
        .route("/webhooks/mkio/{rule}", post(measured).options(handshake))
        .with_state(state)
        .merge(health::router(health))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method);
    crate::telemetry::observe(router, "ingest")
}

/// [`receive`], counted by outcome and timed: `accepted` when the request stored something
/// (or was an empty batch), `duplicate` when every event was already stored, else the status.
async fn measured(
    state: State<Arc<IngestState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let result = receive(state, uri, headers, body).await;
    let outcome = match &result {
        Ok(Json(answer)) => {
            let accepted = answer["accepted"].as_u64().unwrap_or(0);
            let duplicates = answer["duplicates"].as_u64().unwrap_or(0);
            if accepted == 0 && duplicates > 0 {
                "duplicate"
            } else {
                "accepted"
            }
        }
        Err(err) => crate::metrics::status_label(err.status.as_u16()),
    };
    crate::metrics::ingest_request(outcome, started.elapsed());
    result.into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the shared secret, from the headers (and the query parameter when enabled) alone,
/// before any of the body is read.
fn check_secret(s: &IngestState, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    if s.secrets.is_empty() {
        return Ok(());
    }
    let query_value = s.query_param.as_deref().and_then(|name| {
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    });
    let creds = Credentials {
        authorization: header_str(headers, "authorization"),
        x_webhook_secret: header_str(headers, "x-webhook-secret"),
        query: query_value.as_deref(),
    };
    if authenticate(&s.secrets, &creds) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("missing or wrong webhook secret"))
    }
}

fn check_signature(s: &IngestState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let signed = SignedHeaders {
        id: header_str(headers, "webhook-id"),
        timestamp: header_str(headers, "webhook-timestamp"),
        signature: header_str(headers, "webhook-signature"),
    };
    let required = match s.signature_mode {
        SignatureMode::Off => return Ok(()),
        SignatureMode::IfPresent => {
            signed.id.is_some() || signed.timestamp.is_some() || signed.signature.is_some()
        }
        SignatureMode::Required => true,
    };
    if !required {
        return Ok(());
    }
    signature::verify(
        &s.signature_keys,
        &signed,
        body,
        now_ms() / 1000,
        s.signature_tolerance_secs,
    )
    .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// Reads at most `limit` bytes within `timeout`; 413 as soon as the declared or actual length
/// exceeds the limit, 408 when the body has not fully arrived in time (the unread rest makes
/// hyper close the connection after the answer, so a stalled client holds nothing longer).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {}; nothing was stored",
                humantime::format_duration(timeout)
            ),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "unreadable_body",
            format!("the request body could not be read: {e}"),
        )),
    }
}

async fn receive(
    State(s): State<Arc<IngestState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_secret(&s, &headers, &uri)?;
    let body = read_body(body, &headers, s.body_limit, s.body_timeout).await?;
    check_signature(&s, &headers, &body)?;
    let events = decode(&headers, &body, now_ms()).map_err(|e| match e {
        DecodeError::UnsupportedMediaType(m) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            m,
        ),
        DecodeError::Invalid(m) => ApiError::bad_request("invalid_cloudevent", m),
    })?;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let outcomes = s.writer.submit(events).await.map_err(|e| match e {
        SubmitError::Busy => ApiError::unavailable(
            "overloaded",
            "the write queue is full; nothing was stored",
            s.retry_after_secs,
        ),
        SubmitError::Closed => ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down; nothing was stored",
            s.retry_after_secs,
        ),
        // The writer has logged the cause.
        SubmitError::Store(_) => ApiError::unavailable(
            "storage_unavailable",
            "the event could not be stored; nothing was stored",
            s.retry_after_secs,
        ),
    })?;
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Appended::Stored { .. }))
        .count();
    let results: Vec<Value> = ids
        .into_iter()
        .zip(&outcomes)
        .map(|(id, outcome)| match outcome {
            Appended::Stored { seq, .. } => json!({"id": id, "seq": seq, "duplicate": false}),
            Appended::Duplicate => json!({"id": id, "seq": null, "duplicate": true}),
        })
        .collect();
    Ok(Json(json!({
        "accepted": stored,
        "duplicates": outcomes.len() - stored,
        "events": results,
    })))
}

/// The CloudEvents webhook abuse-protection handshake, answered synchronously. A callback URL
/// is never called: that would let anyone make the relay send requests (SSRF).
async fn handshake(headers: HeaderMap) -> Response {
    let Some(origin) = headers.get("webhook-request-origin").cloned() else {
        return ApiError::bad_request(
            "not_a_handshake",
            "OPTIONS here is the webhook handshake and needs a WebHook-Request-Origin header",
        )
        .into_response();
    };
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert("webhook-allowed-origin", origin);
    h.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}
