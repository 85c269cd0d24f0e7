//! What every `/api` request passes through before its handler: statistics, the bearer token,
//! the rate limit and injected faults, in that order.

use super::error::ApiError;
use super::limits::Class;
use super::{lock, paths, Shared};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// The scope of requests outside `/api/v1/projects/{p}/`.
pub(crate) const ORGANIZATION: &str = "organization";

pub(crate) async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let scope = paths::project_of(&path).unwrap_or(ORGANIZATION).to_string();
    let class = if method == Method::GET || method == Method::HEAD {
        Class::Get
    } else {
        Class::Write
    };
    lock(&sh.limiter).arrive(&scope, class, started);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = match check(&sh, auth.as_deref(), &scope, class, started).await {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    };
    let status = response.status().as_u16();
    lock(&sh.limiter).finish(&scope, class, status);
    tracing::debug!(%method, %path, status, elapsed_ms = started.elapsed().as_millis() as u64, "mkio-sim request");
    response
}

async fn check(
    sh: &Shared,
    auth: Option<&str>,
    scope: &str,
    class: Class,
    now: Instant,
) -> Result<(), Response> {
    if let Some(token) = &sh.config.token {
        let given = auth.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a valid bearer token is required",
            );
            return Err(e.into_response());
        }
    }
    if !lock(&sh.limiter).admit(scope, class, now) {
        let limit = match class {
            Class::Get => format!("{} GET", sh.config.get_limit_per_minute),
            Class::Write => format!("{} write", sh.config.write_limit_per_minute),
        };
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("Rate limit exceeded for {scope}: {limit} requests per minute. Retry later."),
        );
        let mut r = e.into_response();
        if let Some(after) = sh.config.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return Err(r);
    }
    if let Some(fault) = sh.active_fault() {
        if let Some(delay) = fault.delay {
            tokio::select! {
                _ = sh.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if let Some(status) = fault.status {
            return Err(ApiError::injected(status).into_response());
        }
    }
    Ok(())
}
