//! The `/_sim` control API: the `SimHandle` methods over HTTP, for a simulator run as its own
//! process. Never rate limited, authenticated or faulted.

use super::error::ApiError;
use super::paths::{self, Target};
use super::{lock, Fault, Shared, SimStats, StateChange};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Sh = State<Arc<Shared>>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/fault", post(set_fault).delete(clear_fault))
        .route("/drop-webhooks", post(drop_webhooks))
        .route("/state", post(set_state))
        .route("/changes", get(changes))
        .route("/seed", post(seed))
}

async fn stats(State(sh): Sh) -> Json<SimStats> {
    Json(sh.stats())
}

async fn changes(State(sh): Sh) -> Json<Vec<StateChange>> {
    Json(lock(&sh.world).changes.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    status: Option<u16>,
    delay: Option<String>,
    #[serde(rename = "for")]
    lasts: Option<String>,
}

fn duration(field: &str, v: Option<&str>) -> Result<Option<Duration>, ApiError> {
    v.map(|s| {
        humantime::parse_duration(s)
            .map_err(|e| ApiError::bad_request(format!("{field}: {e} (write e.g. \"2s\")")))
    })
    .transpose()
}

async fn set_fault(State(sh): Sh, Json(b): Json<FaultBody>) -> Result<Json<Value>, ApiError> {
    if b.status.is_some_and(|s| !(200..=599).contains(&s)) {
        return Err(ApiError::bad_request(
            "status must be an HTTP status from 200 to 599",
        ));
    }
    let fault = Fault {
        status: b.status,
        delay: duration("delay", b.delay.as_deref())?,
        until: duration("for", b.lasts.as_deref())?.map(|d| Instant::now() + d),
    };
    *lock(&sh.fault) = Some(fault);
    Ok(Json(json!({ "fault": "set" })))
}

async fn clear_fault(State(sh): Sh) -> Json<Value> {
    *lock(&sh.fault) = None;
    Json(json!({ "fault": "cleared" }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropBody {
    count: usize,
}

async fn drop_webhooks(State(sh): Sh, Json(b): Json<DropBody>) -> Json<Value> {
    sh.add_drops(b.count);
    Json(json!({ "dropping": b.count }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    path: String,
    state: String,
}

async fn set_state(State(sh): Sh, Json(b): Json<StateBody>) -> Result<Json<Value>, ApiError> {
    if sh.force_state(&b.path, &b.state) {
        Ok(Json(
            json!({ "path": paths::canonical(&b.path), "state": b.state }),
        ))
    } else {
        Err(ApiError::not_found(format!("{} does not exist", b.path)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedJob {
    transform: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedOutput {
    live_event: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    project: String,
    #[serde(default)]
    jobs: Vec<SeedJob>,
    #[serde(default)]
    assets: Vec<String>,
    #[serde(default)]
    streaming_locators: Vec<String>,
    #[serde(default)]
    streaming_endpoints: Vec<String>,
    #[serde(default)]
    media_live_events: Vec<String>,
    #[serde(default)]
    live_outputs: Vec<SeedOutput>,
    #[serde(default)]
    live_channels: Vec<String>,
    #[serde(default)]
    live_events: Vec<String>,
}

/// Creates resources through the same path as PUT, without touching the rate budget.
async fn seed(State(sh): Sh, Json(s): Json<Seed>) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !sh.config.projects.contains(&s.project) {
        return Err(ApiError::not_found(format!(
            "project {} does not exist",
            s.project
        )));
    }
    let base = format!("/api/v1/projects/{}", s.project);
    let mut todo: Vec<(String, Value)> = vec![];
    for j in &s.jobs {
        let path = format!("{base}/media/transforms/{}/jobs/{}", j.transform, j.name);
        let body = json!({ "properties": {
            "description": j.description,
            "input": { "@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": format!("{}-input", j.name) },
        }});
        todo.push((path, body));
    }
    let named = |coll: &str, names: &[String], body: Value| -> Vec<(String, Value)> {
        names
            .iter()
            .map(|n| (format!("{base}/{coll}/{n}"), body.clone()))
            .collect()
    };
    todo.extend(named(
        "media/assets",
        &s.assets,
        json!({ "properties": {} }),
    ));
    todo.extend(named(
        "media/streamingLocators",
        &s.streaming_locators,
        json!({ "properties": {} }),
    ));
    todo.extend(named(
        "media/streamingEndpoints",
        &s.streaming_endpoints,
        json!({ "properties": {} }),
    ));
    todo.extend(named(
        "media/liveEvents",
        &s.media_live_events,
        json!({ "properties": {} }),
    ));
    for o in &s.live_outputs {
        let path = format!(
            "{base}/media/liveEvents/{}/liveOutputs/{}",
            o.live_event, o.name
        );
        todo.push((path, json!({ "properties": {} })));
    }
    let stopped = json!({ "spec": { "state": "Stopped" } });
    todo.extend(named(
        "live/liveChannels",
        &s.live_channels,
        stopped.clone(),
    ));
    todo.extend(named("live/liveEvents", &s.live_events, stopped));
    let mut created = 0;
    for (path, body) in todo {
        let Some(Target::Item(item)) = paths::resolve(&path) else {
            return Err(ApiError::bad_request(format!(
                "not a resource path: {path}"
            )));
        };
        created += usize::from(sh.put(item, body)?);
    }
    Ok((StatusCode::OK, Json(json!({ "created": created }))))
}
