//! Outbound subscriptions: which events a subscription wants, and when a failed delivery is
//! tried again.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which events a subscription receives. Each list narrows; an empty list allows anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub states: Vec<String>,
}

/// The facts of an event that filters look at.
pub struct EventFacts<'a> {
    pub event_type: &'a str,
    pub project: &'a str,
    pub kind: &'a str,
    pub state: Option<&'a str>,
}

fn allows(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
}

impl Filter {
    pub fn matches(&self, e: &EventFacts<'_>) -> bool {
        allows(&self.types, Some(e.event_type))
            && allows(&self.projects, Some(e.project))
            && allows(&self.kinds, Some(e.kind))
            && allows(&self.states, e.state)
    }
}

/// The fraction by which each retry delay is randomly stretched or shrunk.
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt after `failures` failed ones (1 = the first failure), or
/// `None` when the schedule is exhausted and the delivery is dead-lettered. `retry_after`, a
/// receiver's own request (429/503), replaces the scheduled delay, capped at `max_retry_after`.
pub fn next_delay(
    schedule: &[Duration],
    failures: usize,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
) -> Option<Duration> {
    let scheduled = *schedule.get(failures.checked_sub(1)?)?;
    Some(match retry_after {
        Some(asked) => asked.min(max_retry_after),
        None => jitter(scheduled),
    })
}

fn jitter(d: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(1.0 - JITTER..=1.0 + JITTER);
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(t: &'a str, p: &'a str, k: &'a str, s: Option<&'a str>) -> EventFacts<'a> {
        EventFacts {
            event_type: t,
            project: p,
            kind: k,
            state: s,
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(Filter::default().matches(&facts("a", "b", "c", None)));
    }

    #[test]
    fn each_list_narrows() {
        let f = Filter {
            types: vec!["MediaKind.JobFinished".into()],
            projects: vec!["p1".into(), "p2".into()],
            kinds: vec![],
            states: vec!["Error".into()],
        };
        assert!(f.matches(&facts("MediaKind.JobFinished", "p2", "job", Some("Error"))));
        assert!(!f.matches(&facts("MediaKind.JobStarted", "p2", "job", Some("Error"))));
        assert!(!f.matches(&facts("MediaKind.JobFinished", "p3", "job", Some("Error"))));
        assert!(!f.matches(&facts(
            "MediaKind.JobFinished",
            "p1",
            "job",
            Some("Finished")
        )));
        assert!(!f.matches(&facts("MediaKind.JobFinished", "p1", "job", None)));
    }

    #[test]
    fn schedule_with_jitter_then_dead_letter() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        let cap = Duration::from_secs(3600);
        for _ in 0..100 {
            let d = next_delay(&schedule, 1, None, cap).unwrap();
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
            let d = next_delay(&schedule, 2, None, cap).unwrap();
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
        assert_eq!(next_delay(&schedule, 3, None, cap), None);
        assert_eq!(next_delay(&[], 1, None, cap), None);
    }

    #[test]
    fn retry_after_replaces_the_delay_up_to_the_cap() {
        let schedule = [Duration::from_secs(10)];
        let cap = Duration::from_secs(60);
        assert_eq!(
            next_delay(&schedule, 1, Some(Duration::from_secs(30)), cap),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            next_delay(&schedule, 1, Some(Duration::from_secs(9999)), cap),
            Some(cap)
        );
        // Retry-After never extends the schedule past its end.
        assert_eq!(
            next_delay(&schedule, 2, Some(Duration::from_secs(1)), cap),
            None
        );
    }
}
