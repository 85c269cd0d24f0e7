//! Renders a stored resource as MK.IO's GET returns it (MKIO.md C.4, D), from what the client
//! PUT plus the simulated state and timestamps.

use super::ids::{stable_uuid, timestamp};
use super::kinds::Kind;
use super::world::Resource;
use serde_json::{json, Map, Value};
use std::time::Duration;

const ACTOR: &str = "mkio-sim@example.com";

/// The full body; `supplemental` is added on single GETs and webhooks, not in list items.
pub(crate) fn render(r: &Resource, processing_for: Duration, supplemental: bool) -> Value {
    let mut v = match r.kind() {
        Kind::Live(_) => return live_api(r),
        Kind::Job => job(r, processing_for),
        _ => media(r),
    };
    if supplemental {
        v["supplemental"] =
            json!({ "operation": "get", "subscription": subscription(&r.item.project) });
    }
    v
}

/// `supplemental.subscription`: the project, with a stable id.
pub(crate) fn subscription(project: &str) -> Value {
    json!({ "id": stable_uuid(project), "name": project })
}

fn arm_id(r: &Resource) -> String {
    let rel = r.item.path.splitn(6, '/').nth(5).unwrap_or_default();
    let rel = rel.strip_prefix("media/").unwrap_or(rel);
    format!(
        "/subscriptions/{}/resourceGroups/default/providers/Microsoft.Media/mediaservices/{}/{}",
        stable_uuid("mkio-sim"),
        r.item.project,
        rel
    )
}

fn system_data(r: &Resource) -> Value {
    json!({
        "createdBy": ACTOR, "createdByType": "User", "createdAt": timestamp(r.created),
        "lastModifiedBy": ACTOR, "lastModifiedByType": "User", "lastModifiedAt": timestamp(r.modified),
    })
}

fn user_properties(r: &Resource) -> Map<String, Value> {
    r.body
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn opt_time(t: Option<std::time::SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(timestamp(t)))
}

fn job(r: &Resource, processing_for: Duration) -> Value {
    let mut props = user_properties(r);
    let progress = match r.state.as_str() {
        "Finished" => 100,
        "Processing" | "Canceling" | "Canceled" => r.processing_since.map_or(0, |since| {
            let f = since.elapsed().as_secs_f64() / processing_for.as_secs_f64().max(1e-9);
            (f * 100.0).clamp(0.0, 99.0) as u64
        }),
        _ => 0,
    };
    let given = props.remove("outputs").and_then(|o| match o {
        Value::Array(a) if !a.is_empty() => Some(a),
        _ => None,
    });
    let given = given.unwrap_or_else(|| vec![json!({ "label": "default" })]);
    let outputs: Vec<Value> =
        given
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let mut o = o.as_object().cloned().unwrap_or_default();
                let label = o.get("label").and_then(Value::as_str).map(str::to_string);
                let asset = format!(
                    "{}-{}",
                    r.item.name,
                    label.clone().unwrap_or_else(|| format!("output{i}"))
                );
                o.entry("@odata.type")
                    .or_insert(json!("#Microsoft.Media.JobOutputAsset"));
                o.entry("assetName").or_insert(json!(asset));
                o.insert("state".into(), json!(r.state));
                o.insert("progress".into(), json!(progress));
                o.insert("startTime".into(), opt_time(r.started));
                o.insert("endTime".into(), opt_time(r.ended));
                if r.state == "Error" {
                    o.insert("error".into(), json!({
                    "category": "Content", "code": "ContentMalformed",
                    "message": "mkio-sim: the job was created to fail (description \"fail\").",
                    "retry": "DoNotRetry",
                }));
                }
                Value::Object(o)
            })
            .collect();
    props.entry("priority").or_insert(json!("Normal"));
    props.entry("description").or_insert(Value::Null);
    props.entry("correlationData").or_insert(json!({}));
    props.insert("created".into(), json!(timestamp(r.created)));
    props.insert("lastModified".into(), json!(timestamp(r.modified)));
    props.insert("state".into(), json!(r.state));
    props.insert("outputs".into(), Value::Array(outputs));
    props.insert("startTime".into(), opt_time(r.started));
    props.insert("endTime".into(), opt_time(r.ended));
    json!({
        "name": r.item.name, "id": arm_id(r), "type": Kind::Job.arm_type(),
        "properties": props, "systemData": system_data(r),
    })
}

fn media(r: &Resource) -> Value {
    let mut props = user_properties(r);
    let field = match r.kind() {
        Kind::StreamingLocator | Kind::Asset => "state",
        _ => "resourceState",
    };
    props.insert(field.into(), json!(r.state));
    props.insert("created".into(), json!(timestamp(r.created)));
    props.insert("lastModified".into(), json!(timestamp(r.modified)));
    match r.kind() {
        Kind::StreamingLocator => {
            props.entry("streamingLocatorId").or_insert(json!(r.id));
            props
                .entry("streamingPolicyName")
                .or_insert(json!("Predefined_ClearStreamingOnly"));
            props.entry("startTime").or_insert(Value::Null);
            props
                .entry("endTime")
                .or_insert(json!("9999-12-31T23:59:59.999999Z"));
            props
                .entry("defaultContentKeyPolicyName")
                .or_insert(Value::Null);
            props.entry("contentKeys").or_insert(json!([]));
            props.entry("filters").or_insert(json!([]));
        }
        Kind::Asset => {
            props.entry("assetId").or_insert(json!(r.id));
        }
        _ => {
            props.insert("provisioningState".into(), json!("Succeeded"));
        }
    }
    let mut v = json!({
        "name": r.item.name, "id": arm_id(r), "type": r.kind().arm_type(),
        "properties": props, "systemData": system_data(r),
    });
    if let Some(loc) = r.body.get("location") {
        v["location"] = loc.clone();
    }
    if !r.labels.is_empty() {
        v["tags"] = json!(r.labels);
    }
    v
}

fn live_api(r: &Resource) -> Value {
    let meta = r.body.get("metadata").and_then(Value::as_object);
    let display = meta
        .and_then(|m| m.get("displayName"))
        .cloned()
        .unwrap_or_else(|| json!(r.item.name));
    let mut spec = r
        .body
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    spec.entry("state").or_insert(json!("Stopped"));
    json!({
        "metadata": {
            "id": r.id, "name": r.item.name, "displayName": display,
            "created": timestamp(r.created), "updated": timestamp(r.modified), "labels": r.labels,
        },
        "spec": spec,
        "status": { "state": r.state, "shortId": &r.id[..4], "info": [] },
    })
}
