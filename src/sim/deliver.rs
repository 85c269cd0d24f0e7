//! Webhook delivery (MKIO.md A.1, B): one structured CloudEvent per matching enabled rule,
//! with the rule's headers and query parameters, retried on the configured schedule, with
//! the outcome kept in the rule's delivery history.

use super::world::HistoryEntry;
use super::{ids, lock, Shared};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// A state change MK.IO reports by webhook.
#[derive(Debug, Clone)]
pub(crate) struct Emission {
    pub event_type: &'static str,
    pub project: String,
    pub source: String,
    pub from: String,
    pub to: String,
    pub resource: Value,
    /// When the change happened: the event's `time`, equal to the `StateChange::at`.
    pub at: SystemTime,
}

/// One delivery: a history entry of one rule, and what to send.
struct Delivery {
    rule_id: String,
    entry: usize,
    spec: Value,
    event: Value,
}

/// Queues `e` for every enabled rule of its project that subscribes to its type.
pub(crate) fn dispatch(sh: &Arc<Shared>, e: Emission) {
    let now = e.at;
    let deliveries: Vec<Delivery> = {
        let mut w = lock(&sh.world);
        let targets: Vec<(String, Value)> = w
            .rules
            .iter()
            .filter(|((p, _), r)| *p == e.project && subscribes(&r.spec, e.event_type))
            .map(|(_, r)| (r.id.clone(), r.spec.clone()))
            .collect();
        targets
            .into_iter()
            .map(|(rule_id, spec)| {
                let history = w.history.entry(rule_id.clone()).or_default();
                history.push(HistoryEntry {
                    created: now,
                    source: e.source.clone(),
                    event_type: e.event_type.to_string(),
                    status: "Pending",
                });
                Delivery {
                    entry: history.len() - 1,
                    rule_id,
                    spec,
                    event: cloud_event(&e, now),
                }
            })
            .collect()
    };
    for d in deliveries {
        // Decided here, in emission order, so "the next n deliveries" is exact.
        let dropped = sh
            .drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if dropped {
            tracing::info!(rule = %d.rule_id, source = %e.source, "webhook dropped on purpose");
            set_status(sh, &d, "Failed");
            lock(&sh.webhook_stats).dropped += 1;
            continue;
        }
        let sh2 = sh.clone();
        sh.tasks.spawn(async move { deliver(sh2, d).await });
    }
}

fn subscribes(spec: &Value, ty: &str) -> bool {
    spec["enabled"].as_bool() == Some(true)
        && spec["events"]
            .as_array()
            .is_some_and(|evs| evs.iter().any(|v| v.as_str() == Some(ty)))
}

/// The envelope of the fixtures: a fresh `id` per delivery.
fn cloud_event(e: &Emission, now: SystemTime) -> Value {
    json!({
        "specversion": "1.0",
        "id": ids::uuid_v4(),
        "type": e.event_type,
        "source": e.source,
        "time": ids::timestamp(now),
        "datacontenttype": "application/json",
        "data": {
            "projectName": e.project,
            "previousState": e.from,
            "state": e.to,
            "resource": e.resource,
        },
    })
}

fn set_status(sh: &Shared, d: &Delivery, status: &'static str) {
    let mut w = lock(&sh.world);
    if let Some(entry) = w
        .history
        .get_mut(&d.rule_id)
        .and_then(|h| h.get_mut(d.entry))
    {
        entry.status = status;
    }
}

async fn deliver(sh: Arc<Shared>, d: Delivery) {
    let mut retries = sh.config.webhook_retry_schedule.iter();
    loop {
        lock(&sh.webhook_stats).attempted += 1;
        match send(&sh.client, &d.spec, &d.event).await {
            Ok(status) if (200..300).contains(&status) => {
                tracing::info!(rule = %d.rule_id, status, ty = %d.event["type"], source = %d.event["source"], "webhook delivered");
                set_status(&sh, &d, "Sent");
                lock(&sh.webhook_stats).succeeded += 1;
                return;
            }
            Ok(status) => tracing::info!(rule = %d.rule_id, status, "webhook refused"),
            Err(e) => tracing::info!(rule = %d.rule_id, error = %e, "webhook not delivered"),
        }
        let Some(wait) = retries.next() else {
            set_status(&sh, &d, "Failed");
            lock(&sh.webhook_stats).failed += 1;
            return;
        };
        set_status(&sh, &d, "Retrying");
        tokio::select! {
            _ = sh.cancel.cancelled() => return,
            _ = tokio::time::sleep(*wait) => {}
        }
    }
}

fn string_pairs(v: &Value) -> impl Iterator<Item = (&String, &str)> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
}

/// One attempt; the answer's status, or why there was none.
async fn send(client: &reqwest::Client, spec: &Value, event: &Value) -> anyhow::Result<u16> {
    let mut url = url::Url::parse(spec["url"].as_str().unwrap_or_default())?;
    let params: Vec<_> = string_pairs(&spec["queryParams"])
        .chain(string_pairs(&spec["authentication"]["queryParams"]))
        .collect();
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    let mut req = client
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(event)?);
    for (k, v) in
        string_pairs(&spec["headers"]).chain(string_pairs(&spec["authentication"]["headers"]))
    {
        req = req.header(k.as_str(), v);
    }
    Ok(req.send().await?.status().as_u16())
}
