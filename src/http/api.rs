//! The local API router: `/v1/events[/stream]`, `/v1/jobs`, `/v1/resources`,
//! `/v1/subscriptions`, behind an optional bearer token, plus `/v1/openapi.json`, health and
//! `/metrics`.

use super::error::{no_route, wrong_method, ApiError};
use super::health::{self, Health};
use super::openapi::{self, Documented};
use super::{events, resources, subscriptions, watches};
use crate::config::Config;
use crate::domain::resource::ResourceKind;
use crate::fanout::feed::FeedHandle;
use crate::ingest::auth::SecretSet;
use crate::store::Store;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub feed: FeedHandle,
    /// Cancelled at shutdown: long-polls answer and streams end.
    pub shutdown: CancellationToken,
    /// Empty when /v1 is open.
    pub token: SecretSet,
    pub default_page_size: u32,
    pub max_page_size: u32,
    pub max_wait: Duration,
    pub keepalive: Duration,
    pub rotation_overlap: Duration,
    /// Wakes the dispatcher after a manual retry or a replay.
    pub dispatcher_wake: Arc<Notify>,
    /// The projects the poller manages (none when polling is off).
    pub polling: Arc<crate::poller::Projects>,
}

impl ApiState {
    pub fn from_config(
        config: &Config,
        store: Arc<dyn Store>,
        feed: FeedHandle,
        shutdown: CancellationToken,
        dispatcher_wake: Arc<Notify>,
    ) -> Self {
        let token = if config.api.token.is_empty() {
            SecretSet::default()
        } else {
            SecretSet::new(std::slice::from_ref(&config.api.token))
        };
        Self {
            store,
            feed,
            shutdown,
            token,
            default_page_size: config.api.default_page_size,
            max_page_size: config.api.max_page_size,
            max_wait: config.api.max_wait,
            keepalive: config.api.stream_keepalive,
            rotation_overlap: config.delivery.secret_rotation_overlap,
            dispatcher_wake,
            polling: Arc::default(),
        }
    }

    /// The page size a request asked for, or the default; 400 outside 1..=max.
    pub fn page_size(&self, limit: Option<u32>) -> Result<u32, ApiError> {
        match limit {
            None => Ok(self.default_page_size),
            Some(n) if (1..=self.max_page_size).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                format!("`limit` must be between 1 and {}", self.max_page_size),
            )),
        }
    }

    /// A `?wait=` duration (`30s`, `2m`, or plain seconds), capped at `api.max_wait`.
    pub fn wait(&self, wait: Option<&str>) -> Result<Option<Duration>, ApiError> {
        let Some(text) = wait else { return Ok(None) };
        let parsed = text
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(text))
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`wait` must be a duration such as 30s or 2m, got {text:?}"),
                )
            })?;
        Ok(Some(parsed.min(self.max_wait)))
    }
}

/// The `/v1` operations behind the API token. Each handler's `#[utoipa::path]` gives its
/// method and path, so this one list makes both the routes and the OpenAPI document.
fn protected() -> Documented<Arc<ApiState>> {
    Documented::new()
        .route::<events::__path_list, _, _>(events::list)
        .route::<events::__path_stream, _, _>(events::stream)
        .route::<resources::__path_list_jobs, _, _>(resources::list_jobs)
        .route::<resources::__path_get_job, _, _>(resources::get_job)
        .route::<resources::__path_list_resources, _, _>(resources::list_resources)
        .route::<resources::__path_get_resource, _, _>(resources::get_resource)
        .route::<subscriptions::__path_list, _, _>(subscriptions::list)
        .route::<subscriptions::__path_create, _, _>(subscriptions::create)
        .route::<subscriptions::__path_get, _, _>(subscriptions::get)
        .route::<subscriptions::__path_update, _, _>(subscriptions::update)
        .route::<subscriptions::__path_delete, _, _>(subscriptions::delete)
        .route::<subscriptions::__path_deliveries, _, _>(subscriptions::deliveries)
        .route::<subscriptions::__path_replay, _, _>(subscriptions::replay)
        .route::<subscriptions::__path_retry, _, _>(subscriptions::retry)
        .route::<watches::__path_list, _, _>(watches::list)
        .route::<watches::__path_create, _, _>(watches::create)
        .route::<watches::__path_get, _, _>(watches::get)
        .route::<watches::__path_delete, _, _>(watches::delete)
}

/// The `/v1` operations open to anyone who can reach the API listener.
fn open() -> Documented<Arc<ApiState>> {
    Documented::new().route::<openapi::__path_serve, _, _>(openapi::serve)
}

/// The paths of every `/v1` route, for the OpenAPI document.
pub fn v1_paths() -> utoipa::openapi::path::Paths {
    let (_, mut paths) = protected().into_parts();
    paths.merge(open().into_parts().1);
    paths
}

pub fn router(state: Arc<ApiState>, health: Health) -> Router {
    let (protected, _) = protected().into_parts();
    let (open, _) = open().into_parts();
    let v1 = protected
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .merge(open)
        .with_state(state);
    let router = v1
        .merge(health::router(health))
        .merge(super::metrics::router())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method);
    crate::telemetry::observe(router, "api")
}

async fn require_token(
    State(s): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !s.token.is_empty() {
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if !presented.is_some_and(|t| s.token.accepts(t)) {
            return Err(ApiError::unauthorized(
                "this API requires `Authorization: Bearer <api token>`",
            ));
        }
    }
    Ok(next.run(request).await)
}

/// Parses a kind name; 400 listing the valid ones.
pub fn parse_kind(kind: &str) -> Result<ResourceKind, ApiError> {
    kind.parse().map_err(|_| {
        let names: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad_request(
            "invalid_kind",
            format!("unknown kind `{kind}`; one of {}", names.join(", ")),
        )
    })
}
