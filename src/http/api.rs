//! The local API router: `/v1/events[/stream]`, `/v1/jobs`, `/v1/resources`,
//! `/v1/subscriptions`, behind an optional bearer token, plus health.

use super::error::{no_route, wrong_method, ApiError};
use super::health::{self, Health};
use super::{events, resources, subscriptions, watches};
use crate::config::Config;
use crate::domain::resource::ResourceKind;
use crate::fanout::feed::FeedHandle;
use crate::ingest::auth::SecretSet;
use crate::store::Store;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
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

pub fn router(state: Arc<ApiState>, health: Health) -> Router {
    let v1 = Router::new()
        .route("/v1/events", get(events::list))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/jobs", get(resources::list_jobs))
        .route(
            "/v1/jobs/{project}/{transform}/{job}",
            get(resources::get_job),
        )
        .route("/v1/resources", get(resources::list_resources))
        .route(
            "/v1/resources/{kind}/{project}/{name}",
            get(resources::get_resource),
        )
        .route(
            "/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/v1/subscriptions/{id}/deliveries",
            get(subscriptions::deliveries),
        )
        .route("/v1/subscriptions/{id}/replay", post(subscriptions::replay))
        .route("/v1/deliveries/{id}/retry", post(subscriptions::retry))
        .route("/v1/watches", get(watches::list).post(watches::create))
        .route(
            "/v1/watches/{id}",
            get(watches::get).delete(watches::delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    v1.merge(health::router(health))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
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
