//! `/v1/watches`: one-off resources for the poller to watch (`POST` with a path and an optional
//! `until` state), listed, read and removed. Watches from configuration, the job safety net
//! and reconciliation appear here too.

use super::api::ApiState;
use super::error::ApiError;
use super::extract::{body, ApiPath, ApiQuery};
use super::openapi::{ErrorBody, WatchPage, WatchView};
use crate::domain::polled::watch_ends;
use crate::domain::resource::{parse_source, ResourceKind};
use crate::domain::time::{format_ms, now_ms};
use crate::store::watches::{OnExisting, WatchQuery, WatchRow};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// A watch as the API shows it.
fn view(w: &WatchRow) -> Value {
    json!({
        "id": w.id,
        "path": w.path,
        "project": w.project,
        "kind": parse_source(&w.path).key.kind,
        "source": w.source,
        "until": w.until_states.as_deref().map(|u| u.split(',').collect::<Vec<_>>()),
        "status": w.status,
        "last_state": w.last_state,
        "polls": w.polls,
        "last_polled_at": w.last_polled_ms.map(format_ms),
        "next_poll_at": (w.status == "active").then(|| format_ms(w.next_poll_ms)),
        "error": w.error,
        "created_at": format_ms(w.created_ms),
        "updated_at": format_ms(w.updated_ms),
    })
}

/// A resource for the poller to watch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// An MK.IO resource path in a managed project, e.g.
    /// `/api/v1/projects/{project}/media/streamingEndpoints/{name}`.
    path: String,
    /// A state, or a list of states, that ends the watch. Absent: the kind's final states
    /// (a job's terminal states; never, for live resources).
    #[schema(value_type = Option<Vec<String>>)]
    until: Option<Until>,
}

/// `until`: one state or a list of states.
#[derive(Deserialize)]
#[serde(untagged)]
enum Until {
    One(String),
    Many(Vec<String>),
}

#[utoipa::path(
    post,
    path = "/v1/watches",
    operation_id = "create_watch",
    tag = "watches",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Watching; the first poll is due now", body = WatchView),
        (status = 200, description = "The path was watched already; that watch (started again if it had ended)", body = WatchView),
        (status = 400, description = "`invalid_body` or `invalid_watch` (not a resource path, project not managed, bad `until`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 409, description = "`polling_off`: no MK.IO token or projects configured", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<Arc<ApiState>>,
    request: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body(request)?;
    let parsed = parse_source(&body.path);
    if !body.path.starts_with("/api/v1/projects/") || parsed.key.kind == ResourceKind::Unknown {
        return Err(ApiError::bad_request(
            "invalid_watch",
            "`path` must be an MK.IO resource path such as \
             /api/v1/projects/{project}/media/streamingEndpoints/{name}",
        ));
    }
    let project = parsed.key.project.clone();
    if s.polling.names().is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "polling_off",
            "polling is off: set mkio.token and mkio.projects, and poll.enabled",
        ));
    }
    if !s.polling.contains(&project) {
        return Err(ApiError::bad_request(
            "invalid_watch",
            format!("project `{project}` is not in mkio.projects, so nothing would poll it"),
        ));
    }
    let until = match body.until {
        None => None,
        Some(Until::One(s)) => Some(vec![s]),
        Some(Until::Many(v)) => Some(v),
    };
    if let Some(states) = &until {
        if states.is_empty()
            || states
                .iter()
                .any(|s| s.trim().is_empty() || s.contains(',') || s.len() > 64)
        {
            return Err(ApiError::bad_request(
                "invalid_watch",
                "`until` must be a state name or a non-empty list of them",
            ));
        }
    }
    let watch = WatchRow::new(
        parsed.canonical,
        project.clone(),
        "api",
        until.map(|u| u.join(",")),
        0,
        now_ms(),
    );
    let stored = s
        .store
        .add_watch(&watch, OnExisting::ReviveInactive)
        .await?;
    s.polling.wake(&project);
    let status = if stored.id == watch.id {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut v = view(&stored);
    if let (Some(state), true) = (&stored.last_state, stored.status == "done") {
        v["condition_met"] = json!(watch_ends(
            parsed.key.kind,
            stored.until_states.as_deref(),
            state
        ));
    }
    Ok((status, Json(v)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this project's watches.
    project: Option<String>,
    /// `active`, `done`, `gone` or `failed`.
    status: Option<String>,
    /// The `next_after` of the previous page.
    after: Option<String>,
    /// Page size (default `api.default_page_size`).
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/watches",
    operation_id = "list_watches",
    tag = "watches",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of watches in id order", body = WatchPage),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = &q.status {
        if !["active", "done", "gone", "failed"].contains(&status.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`status` must be one of active, done, gone, failed",
            ));
        }
    }
    let limit = s.page_size(q.limit)?;
    let rows = s
        .store
        .watches(&WatchQuery {
            id: None,
            project: q.project,
            status: q.status,
            after_id: q.after.unwrap_or_default(),
            limit: i64::from(limit),
        })
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|w| w.id.clone()))
        .flatten();
    Ok(Json(json!({
        "watches": rows.iter().map(view).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

async fn find(s: &ApiState, id: &str) -> Result<WatchRow, ApiError> {
    let rows = s
        .store
        .watches(&WatchQuery {
            id: Some(id.to_owned()),
            limit: 1,
            ..WatchQuery::default()
        })
        .await?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no watch {id}")))
}

#[utoipa::path(
    get,
    path = "/v1/watches/{id}",
    operation_id = "get_watch",
    tag = "watches",
    params(("id" = String, Path, description = "Watch id")),
    responses(
        (status = 200, description = "The watch", body = WatchView),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such watch", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&find(&s, &id).await?)))
}

#[utoipa::path(
    delete,
    path = "/v1/watches/{id}",
    operation_id = "delete_watch",
    tag = "watches",
    params(("id" = String, Path, description = "Watch id")),
    responses(
        (status = 204, description = "No longer watched"),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such watch", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if s.store.delete_watch(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no watch {id}")))
    }
}
