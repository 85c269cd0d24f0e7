//! The OpenAPI 3.1 document of `/v1`, generated from the handlers' `#[utoipa::path]`
//! annotations, and [`Documented`], the router builder that routes each handler at exactly the
//! method and path its annotation documents, so the router and the document cannot drift.
//!
//! Handlers build their JSON with `json!`; the types below describe those shapes for the
//! document only (see `views.rs` and the handlers for the code that produces them).

use axum::handler::Handler;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Routes and their documentation, built together.
pub struct Documented<S> {
    router: Router<S>,
    paths: Paths,
}

impl<S: Clone + Send + Sync + 'static> Default for Documented<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Documented<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Paths::new(),
        }
    }

    /// Routes `handler` at the path and methods of its annotation `P` (the `__path_<handler>`
    /// type `#[utoipa::path]` generates) and adds the operation to the document.
    pub fn route<P: utoipa::Path, H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        let path = P::path();
        let methods = P::methods();
        let mut method_router = MethodRouter::new();
        for method in &methods {
            method_router = method_router.on(filter(method), handler.clone());
        }
        self.router = self.router.route(&path, method_router);
        self.paths.add_path_operation(path, methods, P::operation());
        self
    }

    pub fn into_parts(self) -> (Router<S>, Paths) {
        (self.router, self.paths)
    }
}

fn filter(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mkio-relay API",
        description = "The local API of mkio-relay: the event log, job and resource state, and \
                       outbound webhook subscriptions. Errors are `{\"error\": {\"code\", \"message\"}}`. \
                       /healthz, /readyz and /metrics (outside /v1) are described in docs/API.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Event, EventPage, Job, JobPage, Resource, ResourcePage,
        SubscriptionFilter, Subscription, SubscriptionList, Delivery, Attempt, DeliveryPage,
        RetryAccepted, ReplayAccepted,
        super::subscriptions::CreateBody, super::subscriptions::PatchBody,
        super::subscriptions::ReplayBody,
        WatchView, WatchPage, super::watches::CreateBody,
    )),
    modifiers(&BearerToken),
    security(("api_token" = [])),
    tags(
        (name = "events", description = "The event log: pages, long-polls and server-sent events"),
        (name = "resources", description = "Current state of jobs and other resources"),
        (name = "subscriptions", description = "Outbound webhooks and their deliveries"),
        (name = "watches", description = "Resources the poller watches on MK.IO"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`api.token`; required only when it is set"))
                    .build(),
            ),
        );
    }
}

/// The whole document: metadata and schemas from [`ApiDoc`], paths from the router's list.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.paths = super::api::v1_paths();
    doc
}

/// The document as served (pretty JSON, as checked in at docs/openapi.json).
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// Every error, on both listeners.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `invalid_query`, `not_found`, `storage_unavailable`.
    pub code: String,
    /// For humans.
    pub message: String,
    /// On a long-poll's 404: whether the condition was met (always false).
    pub condition_met: Option<bool>,
}

/// One event of the log.
#[derive(ToSchema)]
pub struct Event {
    /// Sequence number: strictly increasing, may have gaps.
    pub seq: i64,
    pub id: String,
    #[schema(rename = "type")]
    pub event_type: String,
    /// Canonical: scheme and host stripped, jobs under `/media/transforms/`.
    pub source: String,
    /// The `time` attribute as delivered.
    pub time: Option<String>,
    /// When the relay stored it (RFC 3339).
    pub received_at: String,
    pub project: String,
    /// `job`, `live_channel`, ..., or `unknown` for undocumented types.
    pub kind: String,
    /// The resource's key fields (depend on the kind).
    #[schema(value_type = Object)]
    pub resource: Value,
    pub previous_state: Option<String>,
    pub state: Option<String>,
    /// Whether the event became its resource's current state.
    pub applied: bool,
    /// `webhook` or `poll`.
    pub origin: String,
    /// The CloudEvent's data, as delivered.
    #[schema(value_type = Object)]
    pub data: Value,
}

#[derive(ToSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as the next `after`.
    pub next_after: i64,
}

/// A job: key, state, outputs, error, correlation data and timestamps.
#[derive(ToSchema)]
pub struct Job {
    pub project: String,
    pub transform: String,
    pub job: String,
    pub state: String,
    pub previous_state: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub correlation_data: Option<Value>,
    pub priority: Option<String>,
    pub created: Option<String>,
    pub last_modified: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// When the event that set the state was received.
    pub updated_at: String,
    /// That event's time.
    pub state_time: String,
    /// When the relay first saw the job.
    pub first_seen_at: String,
    /// That event's sequence number.
    pub last_seq: i64,
    /// With `?wait=`: whether `until` holds.
    pub condition_met: Option<bool>,
}

#[derive(ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor`; null on the last page.
    pub next_cursor: Option<String>,
}

/// Any resource; jobs have the job shape plus `kind`.
#[derive(ToSchema)]
pub struct Resource {
    pub kind: String,
    pub project: String,
    pub name: String,
    pub state: String,
    pub previous_state: Option<String>,
    /// Facts the kind keeps (`desired_state`, `info`, `parent`, ...).
    #[schema(value_type = Object)]
    pub details: Value,
    pub updated_at: String,
    pub state_time: String,
    pub first_seen_at: String,
    pub last_seq: i64,
    /// With `?wait=`: whether `until` holds.
    pub condition_met: Option<bool>,
}

#[derive(ToSchema)]
pub struct ResourcePage {
    pub resources: Vec<Resource>,
    pub next_cursor: Option<String>,
}

/// Which events a subscription receives; each list narrows, empty or absent means any.
#[derive(ToSchema)]
pub struct SubscriptionFilter {
    pub types: Option<Vec<String>>,
    pub projects: Option<Vec<String>>,
    pub kinds: Option<Vec<String>>,
    /// The event's new state.
    pub states: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub filter: SubscriptionFilter,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub retry_schedule: Option<Vec<String>>,
    /// `api` or `config`.
    pub origin: String,
    pub previous_secret_valid_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Only at creation and after a rotation.
    pub secret: Option<String>,
}

#[derive(ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

#[derive(ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub at: String,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub subscription_id: String,
    pub seq: i64,
    pub resource: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub attempt_log: Vec<Attempt>,
}

#[derive(ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as the next `after`; null when the page is empty.
    pub next_after: Option<i64>,
}

#[derive(ToSchema)]
pub struct RetryAccepted {
    pub id: i64,
    /// Always `pending`.
    pub state: String,
}

#[derive(ToSchema)]
pub struct ReplayAccepted {
    pub subscription_id: String,
    /// Deliveries queued.
    pub queued: u64,
}

/// A resource the poller watches.
#[derive(ToSchema)]
pub struct WatchView {
    /// `w_` and 16 hex digits.
    pub id: String,
    /// The canonical MK.IO object path.
    pub path: String,
    pub project: String,
    /// The resource kind the path names.
    pub kind: String,
    /// `api`, `config` (discovered), `safety_net` (a job with no terminal state for too long)
    /// or `reconcile` (its webhook failed to arrive).
    pub source: String,
    /// States that end the watch; null: the kind's final states.
    pub until: Option<Vec<String>>,
    /// `active`, `done` (reached its state), `gone` (MK.IO answered 404) or `failed`.
    pub status: String,
    /// The state the last poll saw.
    pub last_state: Option<String>,
    pub polls: i64,
    pub last_polled_at: Option<String>,
    /// Null once the watch has ended.
    pub next_poll_at: Option<String>,
    /// The last poll's failure, if it failed.
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct WatchPage {
    pub watches: Vec<WatchView>,
    /// Pass as the next `after`; null on the last page.
    pub next_after: Option<String>,
}
