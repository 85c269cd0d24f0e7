//! The non-regression rule: whether an observed state replaces a resource's current state.

use super::resource::ResourceKind;

/// Job state ranks (MKIO.md C.3); `None` for a state string MK.IO has not documented.
pub fn job_rank(state: &str) -> Option<u8> {
    match state {
        "Queued" => Some(0),
        "Scheduled" => Some(1),
        "Processing" => Some(2),
        "Canceling" => Some(3),
        "Finished" | "Error" | "Canceled" => Some(4),
        _ => None,
    }
}

/// Whether a job state is terminal (absorbing).
pub fn is_terminal_job_state(state: &str) -> bool {
    job_rank(state) == Some(4)
}

/// The ordering facts of one state: the state string and when it was true.
///
/// `version_ms` is the resource's own modification time when the event carries one
/// (`properties.lastModified`), otherwise the event time; `event_ms` is the event time, or the
/// receive time when the event has none. `seq` is the event's log sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation<'a> {
    pub state: &'a str,
    pub version_ms: i64,
    pub event_ms: i64,
    pub seq: i64,
}

impl Observation<'_> {
    fn order(&self) -> (i64, i64, i64) {
        (self.version_ms, self.event_ms, self.seq)
    }
}

/// Whether `new` replaces `current` as the resource's state.
///
/// Jobs move forward by rank (Queued < Scheduled < Processing < Canceling < terminal); a terminal
/// state is absorbing; equal ranks (and undocumented states) are ordered by time. Every other
/// kind is ordered by time, then by sequence.
pub fn supersedes(kind: ResourceKind, current: &Observation<'_>, new: &Observation<'_>) -> bool {
    if kind == ResourceKind::Job {
        if is_terminal_job_state(current.state) {
            return false;
        }
        match (job_rank(current.state), job_rank(new.state)) {
            (Some(cur), Some(next)) if next != cur => return next > cur,
            _ => {}
        }
    }
    new.order() >= current.order()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(state: &str, t: i64, seq: i64) -> Observation<'_> {
        Observation {
            state,
            version_ms: t,
            event_ms: t,
            seq,
        }
    }

    #[test]
    fn job_started_after_finished_does_not_regress() {
        let finished = obs("Finished", 200, 1);
        let started = obs("Processing", 100, 2);
        assert!(!supersedes(ResourceKind::Job, &finished, &started));
    }

    #[test]
    fn job_terminal_is_absorbing_even_for_newer_events() {
        let finished = obs("Finished", 100, 1);
        assert!(!supersedes(
            ResourceKind::Job,
            &finished,
            &obs("Error", 500, 2)
        ));
        assert!(!supersedes(
            ResourceKind::Job,
            &finished,
            &obs("Queued", 500, 2)
        ));
        assert!(!supersedes(
            ResourceKind::Job,
            &obs("Canceled", 1, 1),
            &obs("Finished", 9, 2)
        ));
    }

    #[test]
    fn job_rank_wins_over_time() {
        // A skewed clock cannot move a job backwards, nor keep it from moving forwards.
        let processing = obs("Processing", 500, 1);
        assert!(supersedes(
            ResourceKind::Job,
            &processing,
            &obs("Finished", 100, 2)
        ));
        assert!(!supersedes(
            ResourceKind::Job,
            &processing,
            &obs("Queued", 900, 2)
        ));
        assert!(supersedes(
            ResourceKind::Job,
            &obs("Queued", 1, 1),
            &obs("Canceling", 0, 2)
        ));
    }

    #[test]
    fn job_equal_rank_ordered_by_time() {
        let p = obs("Processing", 500, 1);
        assert!(supersedes(
            ResourceKind::Job,
            &p,
            &obs("Processing", 600, 2)
        ));
        assert!(!supersedes(
            ResourceKind::Job,
            &p,
            &obs("Processing", 400, 2)
        ));
        assert!(supersedes(
            ResourceKind::Job,
            &p,
            &obs("Processing", 500, 2)
        ));
    }

    #[test]
    fn job_undocumented_state_ordered_by_time_but_never_past_terminal() {
        let p = obs("Processing", 500, 1);
        assert!(supersedes(ResourceKind::Job, &p, &obs("Paused", 600, 2)));
        assert!(!supersedes(ResourceKind::Job, &p, &obs("Paused", 400, 2)));
        assert!(!supersedes(
            ResourceKind::Job,
            &obs("Finished", 1, 1),
            &obs("Paused", 900, 2)
        ));
    }

    #[test]
    fn other_kinds_ordered_by_time_then_sequence() {
        let stopped = obs("Stopped", 300, 5);
        let started_older = obs("Running", 200, 6);
        assert!(!supersedes(
            ResourceKind::LiveChannel,
            &stopped,
            &started_older
        ));
        assert!(supersedes(
            ResourceKind::LiveChannel,
            &stopped,
            &obs("Running", 400, 6)
        ));
        // Same time: the later sequence number wins.
        assert!(supersedes(
            ResourceKind::LiveChannel,
            &stopped,
            &obs("Running", 300, 6)
        ));
        assert!(!supersedes(
            ResourceKind::LiveChannel,
            &stopped,
            &obs("Running", 300, 4)
        ));
    }

    #[test]
    fn version_time_breaks_ties_before_event_time() {
        let cur = Observation {
            state: "Processing",
            version_ms: 100,
            event_ms: 900,
            seq: 1,
        };
        let new = Observation {
            state: "Processing",
            version_ms: 200,
            event_ms: 100,
            seq: 2,
        };
        assert!(supersedes(ResourceKind::Job, &cur, &new));
        assert!(!supersedes(ResourceKind::Job, &new, &cur));
    }
}
