//! Resource-state projection inside one append transaction, shared by both backends: they load
//! and save rows, this decides what changes.

use super::ResourceRow;
use crate::domain::event::NewEvent;
use crate::domain::resource::ResourceKey;
use crate::domain::state::{supersedes, Observation};
use std::collections::HashMap;

/// Resources touched by the current batch: their state after the events seen so far, and
/// whether that state must be written back.
#[derive(Default)]
pub(super) struct Projection {
    rows: HashMap<ResourceKey, (Option<ResourceRow>, bool)>,
}

impl Projection {
    /// Whether `key` still needs its current row loaded from the database.
    pub fn needs(&self, key: &ResourceKey) -> bool {
        !self.rows.contains_key(key)
    }

    /// Records the row loaded from the database (`None` when the resource is new).
    pub fn load(&mut self, key: ResourceKey, row: Option<ResourceRow>) {
        self.rows.entry(key).or_insert((row, false));
    }

    /// Whether `event` (which [`NewEvent::sets_state`]) would become the current state.
    pub fn would_apply(&self, event: &NewEvent) -> bool {
        let Some(state) = event.state.as_deref() else {
            return false;
        };
        match self.rows.get(&event.key) {
            Some((Some(cur), _)) => supersedes(
                event.key.kind,
                &Observation {
                    state: &cur.state,
                    version_ms: cur.version_ms,
                    event_ms: cur.event_ms,
                    seq: cur.last_seq,
                },
                &Observation {
                    state,
                    version_ms: event.version_ms,
                    event_ms: event.event_ms,
                    seq: i64::MAX,
                },
            ),
            _ => true,
        }
    }

    /// Makes `event`, stored at `seq`, the resource's current state.
    pub fn apply(&mut self, event: &NewEvent, seq: i64) {
        let Some(state) = event.state.clone() else {
            return;
        };
        let entry = self.rows.entry(event.key.clone()).or_insert((None, false));
        let (previous_state, created_ms) = match &entry.0 {
            Some(cur) => (Some(cur.state.clone()), cur.created_ms),
            None => (None, event.received_ms),
        };
        *entry = (
            Some(ResourceRow {
                kind: event.key.kind,
                project: event.key.project.clone(),
                parent: event.key.parent.clone(),
                name: event.key.name.clone(),
                state,
                previous_state,
                version_ms: event.version_ms,
                event_ms: event.event_ms,
                last_seq: seq,
                created_ms,
                updated_ms: event.received_ms,
                details: event.details.clone(),
            }),
            true,
        );
    }

    /// The rows that changed, to upsert before commit.
    pub fn changed(self) -> impl Iterator<Item = ResourceRow> {
        self.rows
            .into_values()
            .filter_map(|(row, dirty)| row.filter(|_| dirty))
    }
}
