//! Resource-state projection inside one append transaction, shared by both backends: they load
//! and save rows, this decides what changes.

use super::ResourceRow;
use crate::domain::event::{NewEvent, Origin};
use crate::domain::resource::ResourceKey;
use crate::domain::state::{supersedes, Observation};
use std::collections::HashMap;

/// A stand-in for the sequence number of the batch's `index`th event until it is inserted.
/// Negative, so it never collides with a real one; ordering never compares it (a new event
/// always compares as the newest).
pub(super) fn provisional(index: usize) -> i64 {
    -(index as i64) - 1
}

/// The batch index a [`provisional`] number stands for.
pub(super) fn index_of(provisional: i64) -> usize {
    (-provisional - 1) as usize
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

    /// Whether `event`, a webhook, reports the state the relay's own polling already recorded
    /// as current: the same transition seen twice, once by each route.
    pub fn confirms_poll(&self, event: &NewEvent) -> bool {
        event.origin == Origin::Webhook
            && matches!(
                self.rows.get(&event.key),
                Some((Some(cur), _))
                    if cur.origin == Origin::Poll && event.state.as_deref() == Some(&*cur.state)
            )
    }

    /// Records `event`, stored at `seq`, as the source of the resource's current state without
    /// counting a transition: its details replace the poll's, the state and the previous state
    /// stay.
    pub fn confirm(&mut self, event: &NewEvent, seq: i64) {
        if let Some((Some(cur), dirty)) = self.rows.get_mut(&event.key) {
            cur.version_ms = event.version_ms;
            cur.event_ms = event.event_ms;
            cur.last_seq = seq;
            cur.updated_ms = event.received_ms;
            cur.origin = event.origin;
            *dirty = true;
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
                // Written from the event's `details_text`; not cloned here.
                details: serde_json::Value::Null,
                origin: event.origin,
            }),
            true,
        );
    }

    /// The rows that changed, to upsert before commit; each `last_seq` is still the
    /// [`provisional`] number of the event that set it.
    pub fn changed(self) -> impl Iterator<Item = ResourceRow> {
        self.rows
            .into_values()
            .filter_map(|(row, dirty)| row.filter(|_| dirty))
    }
}
