//! `/v1/jobs` and `/v1/resources`: current state, listed or one at a time, with long-poll waits
//! (`?wait=&until=`) that are woken by the feed, never by polling the database.

use super::api::{parse_kind, ApiState};
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::openapi::{ErrorBody, Job, JobPage, Resource, ResourcePage};
use super::views;
use crate::domain::resource::ResourceKind;
use crate::domain::state::is_terminal_job_state;
use crate::store::{ResourceCursor, ResourceQuery, ResourceRow};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

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

/// What a waiting request waits for.
enum Until {
    /// A terminal state of the kind (jobs; scheduled operations; streaming locators).
    Terminal,
    /// One of these states.
    States(Vec<String>),
    /// Any change after the request started: a newer event applied, or the resource appearing.
    Change { since_seq: i64 },
}

/// The states `until=terminal` means for each kind that has them.
fn terminal(kind: ResourceKind, state: &str) -> Option<bool> {
    match kind {
        ResourceKind::Job => Some(is_terminal_job_state(state)),
        ResourceKind::ScheduledOperation => Some(matches!(state, "Completed" | "Error")),
        ResourceKind::StreamingLocator => Some(state == "Created"),
        _ => None,
    }
}

impl Until {
    fn parse(kind: ResourceKind, until: Option<&str>) -> Result<Self, ApiError> {
        match until.map(str::trim) {
            None if kind == ResourceKind::Job => Ok(Self::Terminal),
            None => Ok(Self::Change { since_seq: 0 }),
            Some("terminal") if terminal(kind, "").is_some() => Ok(Self::Terminal),
            Some("terminal") => Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "`until=terminal` is defined for job, scheduled_operation and \
                     streaming_locator; name the states for {kind}"
                ),
            )),
            Some(list) => {
                let states: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if states.is_empty() {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        "`until` names no state",
                    ));
                }
                Ok(Self::States(states))
            }
        }
    }

    /// Records what the resource looked like when the wait began (for `Change`).
    fn set_baseline(&mut self, row: Option<&ResourceRow>) {
        if let Self::Change { since_seq } = self {
            *since_seq = row.map_or(0, |r| r.last_seq);
        }
    }

    fn met(&self, row: Option<&ResourceRow>) -> bool {
        match (self, row) {
            (_, None) => false,
            (Self::Terminal, Some(r)) => terminal(r.kind, &r.state).unwrap_or(false),
            (Self::States(states), Some(r)) => states.contains(&r.state),
            (Self::Change { since_seq }, Some(r)) => r.last_seq > *since_seq,
        }
    }
}

/// One resource by key, optionally waiting until `until` holds or `wait` passes.
/// Returns the row (if known) and whether the condition was met (`None` without a wait).
async fn find(
    s: &ApiState,
    query: ResourceQuery,
    params: &WaitParams,
) -> Result<(Option<ResourceRow>, Option<bool>), ApiError> {
    let wait = s.wait(params.wait.as_deref())?;
    let until = params.until.as_deref();
    if wait.is_none() && until.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`until` needs `wait`",
        ));
    }
    let kind = query.kind.unwrap_or(ResourceKind::Unknown);
    let Some(wait) = wait else {
        return Ok((pick(s.store.resources(&query).await?, &query)?, None));
    };
    let mut until = Until::parse(kind, until)?;
    let name = query.name.clone().unwrap_or_default();
    let project = query.project.clone().unwrap_or_default();
    let wake = s.feed.waiters.register(kind, &project, &name);
    let _waiting = crate::metrics::Connected::waiter();
    let deadline = Instant::now() + wait;
    let mut first_look = true;
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        // Registered before the read: an event committed after it wakes us.
        notified.as_mut().enable();
        let row = pick(s.store.resources(&query).await?, &query)?;
        if first_look {
            until.set_baseline(row.as_ref());
            first_look = false;
        }
        if until.met(row.as_ref()) {
            return Ok((row, Some(true)));
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => return Ok((row, Some(false))),
            () = s.shutdown.cancelled() => return Ok((row, Some(false))),
        }
    }
}

/// The one row a key query found; 409 when the name is ambiguous across parents.
fn pick(mut rows: Vec<ResourceRow>, q: &ResourceQuery) -> Result<Option<ResourceRow>, ApiError> {
    if rows.len() > 1 {
        let parents: Vec<&str> = rows.iter().map(|r| r.parent.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous",
            format!(
                "several {} resources are named {} (parents: {}); add ?parent=",
                q.kind.map_or("", |k| k.as_str()),
                q.name.as_deref().unwrap_or(""),
                parents.join(", ")
            ),
        ));
    }
    Ok(rows.pop())
}

fn respond(
    row: Option<ResourceRow>,
    met: Option<bool>,
    view: fn(&ResourceRow) -> Value,
    what: String,
) -> Result<Json<Value>, ApiError> {
    match row {
        Some(row) => {
            let mut body = view(&row);
            if let Some(met) = met {
                body["condition_met"] = json!(met);
            }
            Ok(Json(body))
        }
        None => {
            let err = ApiError::not_found(format!("{what} is not known"));
            Err(match met {
                Some(met) => err.with("condition_met", json!(met)),
                None => err,
            })
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsParams {
    project: Option<String>,
    transform: Option<String>,
    state: Option<String>,
    /// Page size, 1 to `api.max_page_size`.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Jobs ordered by project, transform, job.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "resources",
    params(JobsParams),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn list_jobs(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    wait: Option<String>,
    until: Option<String>,
    parent: Option<String>,
}

/// One job; with `?wait=`, held until `until` holds.
#[utoipa::path(
    get,
    path = "/v1/jobs/{project}/{transform}/{job}",
    tag = "resources",
    params(
        ("project" = String, Path, description = "Project name"),
        ("transform" = String, Path, description = "Transform name"),
        ("job" = String, Path, description = "Job name"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long (capped at `api.max_wait`)"),
        ("until" = Option<String>, Query, description = "With `wait`: `terminal` or `STATE[,STATE...]`"),
    ),
    responses(
        (status = 200, description = "The job (with `condition_met` after a wait)", body = Job),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "Not known (after a wait, `error.condition_met` is false)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn get_job(
    State(s): State<Arc<ApiState>>,
    ApiPath((project, transform, job)): ApiPath<(String, String, String)>,
    ApiQuery(p): ApiQuery<WaitParams>,
) -> Result<Json<Value>, ApiError> {
    if p.parent.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a job's parent is its transform, in the path",
        ));
    }
    let query = ResourceQuery {
        kind: Some(ResourceKind::Job),
        project: Some(project.clone()),
        parent: Some(transform.clone()),
        name: Some(job.clone()),
        limit: 2,
        ..ResourceQuery::default()
    };
    let (row, met) = find(&s, query, &p).await?;
    respond(
        row,
        met,
        views::job,
        format!("job {project}/{transform}/{job}"),
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResourcesParams {
    /// Resource kind.
    kind: Option<String>,
    project: Option<String>,
    /// A job's transform, a live output's live event, a scheduled operation's `{kind}/{name}`.
    parent: Option<String>,
    state: Option<String>,
    /// Page size, 1 to `api.max_page_size`.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Resources ordered by kind, project, parent, name.
#[utoipa::path(
    get,
    path = "/v1/resources",
    tag = "resources",
    params(ResourcesParams),
    responses(
        (status = 200, description = "A page of resources", body = ResourcePage),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn list_resources(
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

/// Most resources are unique by (kind, project, name); a live output or scheduled operation
/// may need `?parent=` when two parents have children of the same name.
#[utoipa::path(
    get,
    path = "/v1/resources/{kind}/{project}/{name}",
    tag = "resources",
    params(
        ("kind" = String, Path, description = "Resource kind"),
        ("project" = String, Path, description = "Project name"),
        ("name" = String, Path, description = "Resource name"),
        ("parent" = Option<String>, Query, description = "The parent, when several share the name"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long (capped at `api.max_wait`)"),
        ("until" = Option<String>, Query, description = "With `wait`: `terminal` or `STATE[,STATE...]`"),
    ),
    responses(
        (status = 200, description = "The resource (with `condition_met` after a wait)", body = Resource),
        (status = 400, description = "Unknown kind or bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "Not known", body = ErrorBody),
        (status = 409, description = "Several parents have a child of this name; add `?parent=`", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn get_resource(
    State(s): State<Arc<ApiState>>,
    ApiPath((kind, project, name)): ApiPath<(String, String, String)>,
    ApiQuery(p): ApiQuery<WaitParams>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let query = ResourceQuery {
        kind: Some(kind),
        project: Some(project.clone()),
        parent: p.parent.clone(),
        name: Some(name.clone()),
        limit: 2,
        ..ResourceQuery::default()
    };
    let (row, met) = find(&s, query, &p).await?;
    respond(
        row,
        met,
        views::resource,
        format!("{kind} {project}/{name}"),
    )
}
