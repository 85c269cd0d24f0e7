//! Webhook rules (MKIO.md B): create or replace, read with masked secrets, list, delete, and
//! the paginated delivery history.

use super::error::ApiError;
use super::ids::{timestamp, uuid_v4};
use super::lists::{page, ListQuery, PageCtx};
use super::render::subscription;
use super::world::Rule;
use super::{lock, Shared};
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// What a read shows instead of an `authentication.*` value.
const MASK: &str = "********";

type Answer = Result<(StatusCode, Value), ApiError>;

fn view(name: &str, r: &Rule) -> Value {
    let mut spec = r.spec.clone();
    for map in ["headers", "queryParams"] {
        if let Some(m) = spec
            .get_mut("authentication")
            .and_then(|a| a.get_mut(map))
            .and_then(Value::as_object_mut)
        {
            m.values_mut().for_each(|v| *v = json!(MASK));
        }
    }
    json!({
        "metadata": {
            "id": r.id, "name": name,
            "created": timestamp(r.created), "updated": timestamp(r.updated),
        },
        "spec": spec,
    })
}

fn validate(body: &Value) -> Result<Value, ApiError> {
    let spec = body
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or_else(|| ApiError::bad_request("body must have a spec object"))?;
    let url_ok = spec["url"]
        .as_str()
        .and_then(|u| url::Url::parse(u).ok())
        .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
    if !url_ok {
        return Err(ApiError::bad_request("spec.url must be an http(s) URL"));
    }
    if !spec["enabled"].is_boolean() {
        return Err(ApiError::bad_request("spec.enabled must be true or false"));
    }
    let events_ok = spec["events"]
        .as_array()
        .is_some_and(|e| e.iter().all(Value::is_string));
    if !events_ok {
        return Err(ApiError::bad_request(
            "spec.events must be a list of event types",
        ));
    }
    for ptr in [
        "/headers",
        "/queryParams",
        "/authentication/headers",
        "/authentication/queryParams",
    ] {
        match spec.pointer(ptr) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "spec{ptr} must map strings to strings"
                )))
            }
        }
    }
    Ok(spec.clone())
}

pub(crate) fn put(sh: &Shared, project: &str, name: &str, body: &Value) -> Answer {
    let spec = validate(body)?;
    let now = SystemTime::now();
    let mut w = lock(&sh.world);
    let key = (project.to_string(), name.to_string());
    let status = match w.rules.get_mut(&key) {
        Some(rule) => {
            rule.spec = spec;
            rule.updated = now;
            StatusCode::OK
        }
        None => {
            let rule = Rule {
                id: uuid_v4(),
                spec,
                created: now,
                updated: now,
            };
            w.rules.insert(key.clone(), rule);
            StatusCode::CREATED
        }
    };
    Ok((status, view(name, &w.rules[&key])))
}

pub(crate) fn get(sh: &Shared, project: &str, name: &str) -> Answer {
    let w = lock(&sh.world);
    let rule = w
        .rules
        .get(&(project.to_string(), name.to_string()))
        .ok_or_else(|| ApiError::not_found(format!("webhook rule {name} does not exist")))?;
    Ok((StatusCode::OK, view(name, rule)))
}

pub(crate) fn delete(sh: &Shared, project: &str, name: &str) -> Answer {
    let mut w = lock(&sh.world);
    match w.rules.remove(&(project.to_string(), name.to_string())) {
        Some(rule) => {
            w.history.remove(&rule.id);
            Ok((StatusCode::OK, json!({})))
        }
        None => Ok((StatusCode::NO_CONTENT, Value::Null)),
    }
}

/// The page context shared by the rule list and the history.
fn ctx<'a>(
    sh: &'a Shared,
    path: &'a str,
    pairs: &'a [(String, String)],
    kind: &'a str,
    project: &str,
) -> PageCtx<'a> {
    PageCtx {
        path,
        pairs,
        base_url: sh
            .config
            .absolute_next_links
            .then_some(sh.base_url.as_str()),
        kind,
        subscription: subscription(project),
    }
}

pub(crate) fn list(sh: &Shared, project: &str, path: &str, pairs: &[(String, String)]) -> Answer {
    let q = ListQuery::parse(pairs)?;
    let none = BTreeMap::new();
    let items: Vec<Value> = {
        let w = lock(&sh.world);
        w.rules
            .iter()
            .filter(|((p, _), _)| p == project)
            .map(|((_, n), r)| (n, view(n, r)))
            .filter(|(n, v)| q.matches(n, &none, v))
            .map(|(_, v)| v)
            .collect()
    };
    Ok((
        StatusCode::OK,
        page(items, &q, &ctx(sh, path, pairs, "WebhookRule", project)),
    ))
}

pub(crate) fn history(
    sh: &Shared,
    project: &str,
    name: &str,
    path: &str,
    pairs: &[(String, String)],
) -> Answer {
    let q = ListQuery::parse(pairs)?;
    let none = BTreeMap::new();
    let items: Vec<Value> = {
        let w = lock(&sh.world);
        let rule = w
            .rules
            .get(&(project.to_string(), name.to_string()))
            .ok_or_else(|| ApiError::not_found(format!("webhook rule {name} does not exist")))?;
        w.history
            .get(&rule.id)
            .into_iter()
            .flatten()
            .map(|h| {
                json!({
                    "created": timestamp(h.created), "source": h.source,
                    "type": h.event_type, "status": h.status,
                })
            })
            .filter(|v| q.matches("", &none, v))
            .collect()
    };
    Ok((
        StatusCode::OK,
        page(items, &q, &ctx(sh, path, pairs, "WebhookEvent", project)),
    ))
}
