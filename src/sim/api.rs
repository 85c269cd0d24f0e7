//! The `/api` handler: resolves the path, checks the project and method, and answers from the
//! engine, the rules or a list page.

use super::error::ApiError;
use super::kinds::Kind;
use super::lists::{page, ListQuery, PageCtx};
use super::paths::{self, ItemRef, Target};
use super::render::{render, subscription};
use super::{lock, rules, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

type Answer = Result<(StatusCode, Value), ApiError>;

/// Any path outside `/api` and `/_sim`.
pub(crate) async fn unknown_path(uri: Uri) -> Response {
    ApiError::not_found(format!("no such path: {}", uri.path())).into_response()
}

pub(crate) async fn dispatch(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    match handle(&sh, &method, &uri, &body) {
        Ok((StatusCode::NO_CONTENT, _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((status, v)) => (status, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))
}

fn project_of(t: &Target) -> &str {
    match t {
        Target::Collection { project, .. } | Target::Rules(project) => project,
        Target::Rule(project, _) | Target::RuleEvents(project, _) => project,
        Target::Item(i) | Target::State(i) | Target::Action(i, _) => &i.project,
    }
}

fn handle(sh: &Arc<Shared>, method: &Method, uri: &Uri, body: &[u8]) -> Answer {
    let path = uri.path();
    let target =
        paths::resolve(path).ok_or_else(|| ApiError::not_found(format!("no such path: {path}")))?;
    let project = project_of(&target);
    if !sh.config.projects.iter().any(|p| p == project) {
        return Err(ApiError::not_found(format!(
            "project {project} does not exist"
        )));
    }
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let m = method.as_str();
    match (&target, m) {
        (Target::Collection { project, kind, .. }, "GET") => list(sh, project, *kind, path, &pairs),
        (Target::Item(i), "GET") => get(sh, i),
        (Target::Item(i), "PUT") => {
            let created = sh.put(i.clone(), json_body(body)?)?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, get(sh, i)?.1))
        }
        (Target::Item(i), "PATCH") => patch(sh, i, json_body(body)?),
        (Target::Item(i), "DELETE") => match lock(&sh.world).remove(&i.path) {
            Some(_) => Ok((StatusCode::OK, json!({}))),
            None => Ok((StatusCode::NO_CONTENT, Value::Null)),
        },
        (Target::State(i), "GET") => {
            let w = lock(&sh.world);
            let r = w.resources.get(&i.path).ok_or_else(|| missing(i))?;
            Ok((StatusCode::OK, json!({ "status": { "state": r.state } })))
        }
        (Target::Action(i, action), "POST") => {
            if action == "scale" {
                scale(sh, i, body)?;
            }
            sh.act(&i.path, action)?;
            Ok((StatusCode::ACCEPTED, get(sh, i)?.1))
        }
        (Target::Rules(p), "GET") => rules::list(sh, p, path, &pairs),
        (Target::Rule(p, n), "GET") => rules::get(sh, p, n),
        (Target::Rule(p, n), "PUT") => rules::put(sh, p, n, &json_body(body)?),
        (Target::Rule(p, n), "DELETE") => rules::delete(sh, p, n),
        (Target::RuleEvents(p, n), "GET") => rules::history(sh, p, n, path, &pairs),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn missing(i: &ItemRef) -> ApiError {
    ApiError::not_found(format!("{} {} does not exist", i.kind.label(), i.name))
}

fn get(sh: &Shared, i: &ItemRef) -> Answer {
    let w = lock(&sh.world);
    let r = w.resources.get(&i.path).ok_or_else(|| missing(i))?;
    Ok((
        StatusCode::OK,
        render(r, sh.config.job_processing_for, true),
    ))
}

fn list(sh: &Shared, project: &str, kind: Kind, path: &str, pairs: &[(String, String)]) -> Answer {
    let q = ListQuery::parse(pairs)?;
    let items: Vec<Value> = {
        let w = lock(&sh.world);
        w.children(path)
            .map(|r| (r, render(r, sh.config.job_processing_for, false)))
            .filter(|(r, v)| q.matches(&r.item.name, &r.labels, v))
            .map(|(_, v)| v)
            .collect()
    };
    let ctx = PageCtx {
        path,
        pairs,
        base_url: sh
            .config
            .absolute_next_links
            .then_some(sh.base_url.as_str()),
        kind: kind.label(),
        subscription: subscription(project),
    };
    Ok((StatusCode::OK, page(items, &q, &ctx)))
}

/// JSON merge patch (RFC 7396) of the stored body; a Live API `spec.state` also acts.
fn patch(sh: &Arc<Shared>, i: &ItemRef, patch: Value) -> Answer {
    let merged = {
        let w = lock(&sh.world);
        let mut body = w
            .resources
            .get(&i.path)
            .ok_or_else(|| missing(i))?
            .body
            .clone();
        merge(&mut body, &patch);
        body
    };
    sh.put(i.clone(), merged)?;
    Ok((StatusCode::OK, get(sh, i)?.1))
}

fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// `POST .../scale {"scaleUnit": n}` records the new scale units before the Scaling step.
fn scale(sh: &Shared, i: &ItemRef, body: &[u8]) -> Result<(), ApiError> {
    let units = json_body(body)?
        .get("scaleUnit")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::bad_request("scaleUnit must be a non-negative integer"))?;
    let mut w = lock(&sh.world);
    let r = w.resources.get_mut(&i.path).ok_or_else(|| missing(i))?;
    if !r.body["properties"].is_object() {
        r.body["properties"] = json!({});
    }
    r.body["properties"]["scaleUnits"] = json!(units);
    Ok(())
}
