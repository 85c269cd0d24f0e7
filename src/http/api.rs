//! The local API router: `/v1/events`, `/v1/jobs`, `/v1/resources`, behind an optional bearer
//! token, plus health.

use super::error::{no_route, wrong_method, ApiError};
use super::extract::{ApiPath, ApiQuery};
use super::health::{self, Health};
use super::views;
use crate::config::Config;
use crate::domain::resource::ResourceKind;
use crate::ingest::auth::SecretSet;
use crate::store::{EventQuery, ResourceCursor, ResourceQuery, ResourceRow, Store};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// Empty when /v1 is open.
    pub token: SecretSet,
    pub default_page_size: u32,
    pub max_page_size: u32,
}

impl ApiState {
    pub fn from_config(config: &Config, store: Arc<dyn Store>) -> Self {
        let token = if config.api.token.is_empty() {
            SecretSet::default()
        } else {
            SecretSet::new(std::slice::from_ref(&config.api.token))
        };
        Self {
            store,
            token,
            default_page_size: config.api.default_page_size,
            max_page_size: config.api.max_page_size,
        }
    }

    fn page_size(&self, limit: Option<u32>) -> Result<u32, ApiError> {
        match limit {
            None => Ok(self.default_page_size),
            Some(n) if (1..=self.max_page_size).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                format!("`limit` must be between 1 and {}", self.max_page_size),
            )),
        }
    }
}

pub fn router(state: Arc<ApiState>, health: Health) -> Router {
    let v1 = Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{project}/{transform}/{job}", get(get_job))
        .route("/v1/resources", get(list_resources))
        .route("/v1/resources/{kind}/{project}/{name}", get(get_resource))
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

fn parse_kind(kind: &str) -> Result<ResourceKind, ApiError> {
    kind.parse().map_err(|_| {
        let names: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad_request(
            "invalid_kind",
            format!("unknown kind `{kind}`; one of {}", names.join(", ")),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    after: Option<i64>,
    limit: Option<u32>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    project: Option<String>,
    kind: Option<String>,
}

async fn list_events(
    State(s): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<EventsParams>,
) -> Result<Json<Value>, ApiError> {
    let after = p.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`after` must not be negative",
        ));
    }
    let query = EventQuery {
        after,
        limit: s.page_size(p.limit)?,
        event_type: p.event_type,
        project: p.project,
        kind: p.kind.as_deref().map(parse_kind).transpose()?,
    };
    let events = s.store.events(&query).await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(json!({
        "events": events.iter().map(views::event).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<ResourceCursor>, ApiError> {
    cursor
        .map(|c| {
            B64URL
                .decode(c)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_query", "`cursor` is not one this API issued")
                })
        })
        .transpose()
}

/// The cursor for the page after `rows`, when the page was full.
fn next_cursor(rows: &[ResourceRow], limit: u32) -> Option<String> {
    let last = rows.last().filter(|_| rows.len() as u32 == limit)?;
    let cursor = ResourceCursor {
        kind: last.kind.as_str().to_owned(),
        project: last.project.clone(),
        parent: last.parent.clone(),
        name: last.name.clone(),
    };
    serde_json::to_vec(&cursor).ok().map(|b| B64URL.encode(b))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsParams {
    project: Option<String>,
    transform: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_jobs(
    State(s): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = s.page_size(p.limit)?;
    let query = ResourceQuery {
        kind: Some(ResourceKind::Job),
        project: p.project,
        parent: p.transform,
        name: None,
        state: p.state,
        after: decode_cursor(p.cursor.as_deref())?,
        limit,
    };
    let rows = s.store.resources(&query).await?;
    Ok(Json(json!({
        "jobs": rows.iter().map(views::job).collect::<Vec<_>>(),
        "next_cursor": next_cursor(&rows, limit),
    })))
}

async fn get_job(
    State(s): State<Arc<ApiState>>,
    ApiPath((project, transform, job)): ApiPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let query = ResourceQuery {
        kind: Some(ResourceKind::Job),
        project: Some(project.clone()),
        parent: Some(transform.clone()),
        name: Some(job.clone()),
        limit: 1,
        ..ResourceQuery::default()
    };
    let rows = s.store.resources(&query).await?;
    let row = rows.first().ok_or_else(|| {
        ApiError::not_found(format!("job {project}/{transform}/{job} is not known"))
    })?;
    Ok(Json(views::job(row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesParams {
    kind: Option<String>,
    project: Option<String>,
    parent: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_resources(
    State(s): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<ResourcesParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = s.page_size(p.limit)?;
    let query = ResourceQuery {
        kind: p.kind.as_deref().map(parse_kind).transpose()?,
        project: p.project,
        parent: p.parent,
        name: None,
        state: p.state,
        after: decode_cursor(p.cursor.as_deref())?,
        limit,
    };
    let rows = s.store.resources(&query).await?;
    Ok(Json(json!({
        "resources": rows.iter().map(views::resource).collect::<Vec<_>>(),
        "next_cursor": next_cursor(&rows, limit),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceParams {
    parent: Option<String>,
}

/// Most resources are unique by (kind, project, name); a live output or scheduled operation
/// may need `?parent=` to pick one when two parents have children of the same name.
async fn get_resource(
    State(s): State<Arc<ApiState>>,
    ApiPath((kind, project, name)): ApiPath<(String, String, String)>,
    ApiQuery(p): ApiQuery<ResourceParams>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let query = ResourceQuery {
        kind: Some(kind),
        project: Some(project.clone()),
        parent: p.parent,
        name: Some(name.clone()),
        limit: 2,
        ..ResourceQuery::default()
    };
    let rows = s.store.resources(&query).await?;
    match rows.as_slice() {
        [] => Err(ApiError::not_found(format!(
            "{kind} {project}/{name} is not known"
        ))),
        [row] => Ok(Json(views::resource(row))),
        _ => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "ambiguous",
            format!("several {kind} resources are named {name} in {project}; add ?parent="),
        )),
    }
}
