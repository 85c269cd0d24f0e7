//! The JSON shapes of events, jobs and resources in API responses.

use crate::domain::resource::{ResourceKey, ResourceKind};
use crate::domain::time::format_ms;
use crate::store::{ResourceRow, StoredEvent};
use serde_json::{json, Map, Value};

pub fn event(e: &StoredEvent) -> Value {
    let key = ResourceKey {
        kind: e.resource_kind.parse().unwrap_or(ResourceKind::Unknown),
        project: e.project.clone(),
        parent: e.parent.clone(),
        name: e.name.clone(),
    };
    let mut resource = key.fields();
    if e.kind != e.resource_kind {
        // An undocumented event type about a recognised resource: say which.
        resource["kind"] = json!(e.resource_kind);
    }
    json!({
        "seq": e.seq,
        "id": e.id,
        "type": e.event_type,
        "source": e.source,
        "time": e.time,
        "received_at": format_ms(e.received_ms),
        "project": e.project,
        "kind": e.kind,
        "resource": resource,
        "previous_state": e.previous_state,
        "state": e.state,
        "applied": e.applied,
        "origin": e.origin,
        "data": e.data,
    })
}

fn key_of(r: &ResourceRow) -> ResourceKey {
    ResourceKey {
        kind: r.kind,
        project: r.project.clone(),
        parent: r.parent.clone(),
        name: r.name.clone(),
    }
}

fn common(r: &ResourceRow, out: &mut Map<String, Value>) {
    out.insert("state".into(), json!(r.state));
    out.insert("previous_state".into(), json!(r.previous_state));
    out.insert("updated_at".into(), json!(format_ms(r.updated_ms)));
    out.insert("state_time".into(), json!(format_ms(r.event_ms)));
    out.insert("first_seen_at".into(), json!(format_ms(r.created_ms)));
    out.insert("last_seq".into(), json!(r.last_seq));
}

/// A job: its key, current state, outputs, error, correlation data and timestamps.
pub fn job(r: &ResourceRow) -> Value {
    let mut out = match key_of(r).fields() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    common(r, &mut out);
    if let Value::Object(details) = &r.details {
        for (k, v) in details {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Any other resource: kind, key, state, and the facts its kind keeps under `details`.
pub fn resource(r: &ResourceRow) -> Value {
    if r.kind == ResourceKind::Job {
        let mut v = job(r);
        v["kind"] = json!("job");
        return v;
    }
    let mut out = Map::new();
    out.insert("kind".into(), json!(r.kind.as_str()));
    if let Value::Object(m) = key_of(r).fields() {
        out.extend(m);
    }
    common(r, &mut out);
    out.insert("details".into(), r.details.clone());
    Value::Object(out)
}
