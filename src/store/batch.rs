//! The in-memory half of appending a batch, shared by every backend: given which events are
//! stored already and the current rows of the touched resources, decide duplicates, which
//! events become current state, the rows to write back and the deliveries to queue. The
//! backends only run the lookups and the multi-row writes around it.

use super::outbox::Subscription;
use super::projection::{index_of, provisional, Projection};
use super::{Appended, ResourceRow, StoreError};
use crate::domain::event::NewEvent;
use crate::domain::resource::ResourceKey;
use crate::domain::subscription::EventFacts;
use std::collections::{HashMap, HashSet};

/// Events per multi-row insert (17 parameters each; SQLite allows 32,766 per statement).
pub(super) const CHUNK_EVENTS: usize = 500;
/// Rows per multi-row lookup or write of narrower rows.
pub(super) const CHUNK_KEYS: usize = 1000;

/// `(source, id)`, the deduplication key.
pub(super) type EventKey = (String, String);

/// The resources whose state the batch may change, each once, in first-seen order.
pub(super) fn state_keys(events: &[NewEvent]) -> Vec<&ResourceKey> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| e.sets_state())
        .map(|e| &e.key)
        .filter(|k| seen.insert(*k))
        .collect()
}

/// The decisions for a batch, before the inserts assign sequence numbers.
pub(super) struct Plan {
    /// `(index in the batch, applied, deliver)` of each event to insert, in batch order.
    /// `deliver` is false for a webhook that confirms a state already recorded by polling
    /// ([`Projection::confirms_poll`]): the transition was delivered once, from the poll.
    pub fresh: Vec<(usize, bool, bool)>,
    projection: Projection,
}

/// Decides a batch: `stored` holds the `(source, id)` pairs already in the store, `current`
/// the stored rows of the resources in [`state_keys`].
pub(super) fn plan(
    events: &[NewEvent],
    mut stored: HashSet<EventKey>,
    current: Vec<ResourceRow>,
) -> Plan {
    let mut projection = Projection::default();
    for row in current {
        let key = ResourceKey {
            kind: row.kind,
            project: row.project.clone(),
            parent: row.parent.clone(),
            name: row.name.clone(),
        };
        projection.load(key, Some(row));
    }
    for key in state_keys(events) {
        projection.load(key.clone(), None);
    }
    let mut fresh = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !stored.insert((e.source.clone(), e.id.clone())) {
            continue; // stored already, or earlier in this batch
        }
        if e.sets_state() && projection.confirms_poll(e) {
            projection.confirm(e, provisional(i));
            fresh.push((i, true, false));
            continue;
        }
        let applied = e.sets_state() && projection.would_apply(e);
        if applied {
            projection.apply(e, provisional(i));
        }
        fresh.push((i, applied, true));
    }
    Plan { fresh, projection }
}

/// What the batch writes after its events are inserted.
pub(super) struct Finished<'a> {
    pub outcomes: Vec<Appended>,
    /// Rows to upsert, each with the serialized details of the event that set it.
    pub changed: Vec<(ResourceRow, &'a str)>,
    /// `(subscription id, seq, resource ordering key, created_ms)`.
    pub deliveries: Vec<(String, i64, String, i64)>,
}

impl Plan {
    /// Completes the plan with the sequence numbers the insert returned.
    pub fn finish<'a>(
        self,
        events: &'a [NewEvent],
        seqs: &HashMap<EventKey, i64>,
        subscriptions: &[Subscription],
    ) -> Result<Finished<'a>, StoreError> {
        let mut outcomes = vec![Appended::Duplicate; events.len()];
        let mut seq_of = vec![0i64; events.len()];
        let mut deliveries = Vec::new();
        for (i, applied, deliver) in &self.fresh {
            let e = &events[*i];
            // Appends are serialized (one writer; an advisory lock on Postgres), so an event
            // absent from the lookup cannot conflict on insert; if one did, fail the batch.
            let seq = *seqs.get(&(e.source.clone(), e.id.clone())).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "event ({}, {}) was stored concurrently",
                    e.source, e.id
                ))
            })?;
            seq_of[*i] = seq;
            outcomes[*i] = Appended::Stored {
                seq,
                applied: *applied,
            };
            let facts = EventFacts {
                event_type: &e.event_type,
                project: &e.key.project,
                kind: e.kind.as_str(),
                state: e.state.as_deref(),
            };
            if !deliver {
                continue;
            }
            for sub in subscriptions.iter().filter(|s| s.filter.matches(&facts)) {
                deliveries.push((sub.id.clone(), seq, e.key.ordering_key(), e.received_ms));
            }
        }
        // Each changed row still carries the provisional number of the event that set it.
        let changed = self
            .projection
            .changed()
            .map(|mut row| {
                let i = index_of(row.last_seq);
                row.last_seq = seq_of[i];
                (row, events[i].details_text.as_str())
            })
            .collect();
        Ok(Finished {
            outcomes,
            changed,
            deliveries,
        })
    }
}
