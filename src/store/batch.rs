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

/// Most events per multi-row insert (17 parameters each; SQLite allows 32,766 per statement).
pub(super) const CHUNK_EVENTS: usize = 512;
/// Most rows per multi-row lookup or write of narrower rows.
pub(super) const CHUNK_KEYS: usize = 1024;

/// Runs of up to this many rows are written with one statement of exactly that many rows.
const EXACT_ROWS: usize = 16;

/// Splits `items` into runs for multi-row statements, none longer than `max` (a power of two
/// above [`EXACT_ROWS`]). A statement's text depends on its row count, and batches of every
/// size from 1 to 1,000 would prepare a statement per size and kind, more than the statement
/// cache holds. Here the first runs are powers of two and the rest (at most 16 rows) is one
/// exact run: a batch of 23 is 16 + 7, one of 50 is 32 + 16 + 2, and each kind of statement
/// has at most 22 shapes, which stay prepared.
pub(super) fn sized_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two() && max > EXACT_ROWS);
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = match rest.len() {
            n if n <= EXACT_ROWS => n,
            n => 1usize << n.min(max).ilog2(),
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

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
            let facts = EventFacts {
                event_type: &e.event_type,
                project: &e.key.project,
                kind: e.kind.as_str(),
                state: e.state.as_deref(),
            };
            let before = deliveries.len();
            if *deliver {
                for sub in subscriptions.iter().filter(|s| s.filter.matches(&facts)) {
                    deliveries.push((sub.id.clone(), seq, e.key.ordering_key(), e.received_ms));
                }
            }
            outcomes[*i] = Appended::Stored {
                seq,
                applied: *applied,
                queued: deliveries.len() > before,
            };
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

#[cfg(test)]
mod tests {
    use super::sized_chunks;

    #[test]
    fn sized_chunks_cover_every_item_once_in_order_with_few_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..=1100usize {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = sized_chunks(&items, 512).collect();
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 512));
            assert!(
                chunks.windows(2).all(|w| w[0].len() >= w[1].len()),
                "longest first"
            );
            assert!(chunks.len() <= 11, "n = {n}: {} statements", chunks.len());
            assert_eq!(chunks.concat(), items, "n = {n}");
            shapes.extend(chunks.iter().map(|c| c.len()));
        }
        assert_eq!(
            shapes.len(),
            16 + 5,
            "1..=16, 32, 64, 128, 256, 512: {shapes:?}"
        );
        let lens =
            |n: usize| -> Vec<usize> { sized_chunks(&vec![0; n], 512).map(<[_]>::len).collect() };
        assert_eq!(lens(23), [16, 7]);
        assert_eq!(lens(50), [32, 16, 2]);
        assert_eq!(lens(9), [9]);
    }
}
