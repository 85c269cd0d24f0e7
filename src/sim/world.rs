//! The simulator's in-memory data: resources, the state-change log, webhook rules and their
//! delivery history. Plain data behind one mutex; no I/O.

use super::kinds::Kind;
use super::paths::ItemRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

/// One simulated resource. `body` is what the client PUT; the GET shape is rendered from it.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub item: ItemRef,
    pub id: String,
    pub body: Value,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    /// Bumped on every state change, so a timer scheduled before a change does nothing after it.
    pub generation: u64,
    pub created: SystemTime,
    pub modified: SystemTime,
    pub started: Option<SystemTime>,
    pub ended: Option<SystemTime>,
    pub processing_since: Option<Instant>,
    /// Jobs: end in `Error` instead of `Finished`.
    pub fail: bool,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.item.kind
    }
}

/// One state change, as benchmarks measure detection latency from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub path: String,
    pub from: String,
    pub to: String,
    #[serde(with = "system_time_rfc3339")]
    pub at: SystemTime,
}

/// A webhook rule (MKIO.md B); `spec` is stored unmasked.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub spec: Value,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// One delivery-history entry of a rule.
#[derive(Debug, Clone)]
pub(crate) struct HistoryEntry {
    pub created: SystemTime,
    pub source: String,
    pub event_type: String,
    pub status: &'static str,
}

/// Everything the simulator remembers.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// By canonical path; a BTreeMap so lists come out sorted by path (hence by name).
    pub resources: BTreeMap<String, Resource>,
    pub changes: Vec<StateChange>,
    /// By (project, rule name).
    pub rules: BTreeMap<(String, String), Rule>,
    /// By rule id.
    pub history: HashMap<String, Vec<HistoryEntry>>,
    /// Source of `Resource::generation`, unique across deletes and re-creates.
    next_generation: u64,
}

impl World {
    /// The direct children of a collection path, in path order.
    pub fn children<'a>(&'a self, collection: &'a str) -> impl Iterator<Item = &'a Resource> {
        let prefix = format!("{collection}/");
        self.resources
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(move |(k, _)| !k[collection.len() + 1..].contains('/'))
            .map(|(_, r)| r)
    }

    /// Removes a resource and everything under it (a live event's outputs).
    pub fn remove(&mut self, path: &str) -> Option<Resource> {
        let prefix = format!("{path}/");
        self.resources.retain(|k, _| !k.starts_with(&prefix));
        self.resources.remove(path)
    }

    /// Sets a resource's state, logging the change; returns the previous state.
    pub fn set_state(&mut self, path: &str, to: &str, now: SystemTime) -> Option<String> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let r = self.resources.get_mut(path)?;
        let from = std::mem::replace(&mut r.state, to.to_string());
        r.generation = generation;
        r.modified = now;
        match to {
            "Processing" | "Starting" => {
                r.started.get_or_insert(now);
                if to == "Processing" {
                    r.processing_since = Some(Instant::now());
                }
            }
            "Finished" | "Error" | "Canceled" => r.ended = Some(now),
            _ => {}
        }
        self.changes.push(StateChange {
            path: path.to_string(),
            from: from.clone(),
            to: to.to_string(),
            at: now,
        });
        Some(from)
    }
}

mod system_time_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::ids::timestamp(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&s)
            .map(SystemTime::from)
            .map_err(serde::de::Error::custom)
    }
}
