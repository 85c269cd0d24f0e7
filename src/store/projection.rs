//! Resource-state projection inside one append transaction, shared by both backends: they load
//! and save rows, this decides what changes.

use super::ResourceRow;
use crate::domain::event::NewEvent;
use crate::domain::resource::ResourceKey;
use crate::domain::state::{supersedes, Observation};
use std::collections::HashMap;

/// A stand-in for the sequence number of the batch's `index`th event until it is inserted.
/// Negative, so it never collides with a real one; ordering never compares it (a new event
/// always compares as the newest).
pub(super) fn provisional(index: usize) -> i64 {
    -(index as i64) - 1
}

/// Resources touched by the current batch: their state after the events seen so far, and
/// whether that state must be written back.
#[derive(Default)]
pub(super) struct Projection {
    rows: HashMap<ResourceKey, (Option<ResourceRow>, bool)>,
}

impl Projection {
    /// Records the row loaded from the database (`None` when the resource is new); a key
    /// already recorded keeps its first row.
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

    /// Replaces provisional sequence numbers (see [`provisional`]) with the real ones:
    /// `seq_of(i)` is the number the insert gave the batch's `i`th event.
    pub fn resolve(&mut self, seq_of: impl Fn(usize) -> i64) {
        for (row, dirty) in self.rows.values_mut() {
            if let (Some(row), true) = (row, *dirty) {
                if row.last_seq < 0 {
                    row.last_seq = seq_of((-row.last_seq - 1) as usize);
                }
            }
        }
    }

    /// The rows that changed, to upsert before commit.
    pub fn changed(self) -> impl Iterator<Item = ResourceRow> {
        self.rows
            .into_values()
            .filter_map(|(row, dirty)| row.filter(|_| dirty))
    }
}
