//! Logging setup: tracing with a human or JSON format, and the per-request span and request id
//! both listeners wrap their routers in.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr; `RUST_LOG`, when set, overrides
/// `log.level`.
pub fn init(log: &LogConfig) {
    init_with(log, std::io::stderr);
}

/// [`init`] with another destination (tests capture the logs this way).
pub fn init_with<W>(log: &LogConfig, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// The request-id header: taken from the client when it sends one, else generated; echoed in
/// the response.
pub const REQUEST_ID: &str = "x-request-id";

/// Wraps a listener's router so every request gets an `x-request-id` and runs in a `request`
/// span (listener, request id, method, path) whose end is logged at debug with the status and
/// latency. The path is logged without its query string: a query may carry the webhook
/// secret.
pub fn observe(router: axum::Router, listener: &'static str) -> axum::Router {
    use axum::http::{HeaderName, Request, Response};
    use std::time::Duration;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    use tracing::Span;

    let header = HeaderName::from_static(REQUEST_ID);
    let trace = TraceLayer::new_for_http()
        .make_span_with(move |request: &Request<axum::body::Body>| {
            let id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "request",
                listener,
                request_id = id,
                method = %request.method(),
                path = request.uri().path(),
            )
        })
        .on_request(())
        .on_response(|response: &Response<_>, latency: Duration, _: &Span| {
            tracing::debug!(
                status = response.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                "request finished"
            );
        })
        // Failures are answered as JSON errors and logged where they are handled.
        .on_failure(());
    router
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}
