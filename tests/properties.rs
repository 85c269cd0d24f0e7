//! Property tests. (a) Decoding and normalization never panic: arbitrary bytes, arbitrary JSON
//! values, envelope-shaped objects with arbitrary fields and mutated fixtures are each accepted
//! or rejected with an error. (b) A job's state never regresses: whatever the order and the
//! duplication of its events, the projected state is the one of highest rank (MKIO.md C.3:
//! Queued 0 < Scheduled 1 < Processing 2 < Canceling 3 < Finished | Error | Canceled 4,
//! terminal absorbing), through the domain rule and through the real SQLite store.

mod common;

use axum::http::{HeaderMap, HeaderValue};
use mkio_relay::domain::event::{CloudEvent, NewEvent, Origin};
use mkio_relay::domain::resource::ResourceKind;
use mkio_relay::domain::state::{job_rank, supersedes, Observation};
use mkio_relay::ingest::decode::decode;
use mkio_relay::store::{self, ResourceQuery, Store, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Cases per decoding property, and for the domain rule; the store property runs fewer (each
/// case commits a few dozen transactions).
const DECODE_CASES: u32 = 512;
const DOMAIN_CASES: u32 = 1000;
const STORE_CASES: u32 = 128;
/// Orders (each with its own duplicates) tried per generated history.
const ORDERS_PER_CASE: usize = 4;
const MAX_EVENTS: usize = 8;
const RECEIVED_MS: i64 = 1_741_950_000_000;

const CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
];

const VALID_FIXTURES: [&str; 10] = [
    "batch-two-events.json",
    "channel-instance-error.json",
    "channel-instance-started.json",
    "channel-instance-stopped.json",
    "job-canceled.json",
    "job-errored.json",
    "job-finished-media-path.json",
    "job-finished.json",
    "job-started.json",
    "scheduled-operation-completed.json",
];

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Without a source file to record regressions beside, print the failing input instead.
        failure_persistence: None,
        ..Config::default()
    }
}

fn headers(content_type: &str, binary: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    if !content_type.is_empty() {
        h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    }
    if binary {
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "binary-id"),
            ("ce-type", "MediaKind.JobFinished"),
            ("ce-source", "/api/v1/projects/p/transforms/t/jobs/j"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
    }
    h
}

/// Decodes and normalizes `body`; panics only if the code under test does. Returns whether
/// it was accepted.
fn decode_and_normalize(h: &HeaderMap, body: &[u8]) -> bool {
    match decode(h, body, RECEIVED_MS) {
        Ok(events) => {
            // An empty batch (`[]`) is a valid batch of nothing: accepted, nothing stored.
            for n in events {
                assert!(!n.id.trim().is_empty());
                assert_eq!(n.received_ms, RECEIVED_MS);
                // Serialized once in the handler; must stay JSON.
                serde_json::from_str::<Value>(&n.details_text).expect("details_text is JSON");
                // The API parses the stored bytes back: whatever is accepted must parse.
                serde_json::from_slice::<Value>(&n.raw).expect("the raw bytes parse back");
            }
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error says why");
            false
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("1.0")),
        Just(json!("/api/v1/projects/p/transforms/t/jobs/j")),
        Just(json!("2025-03-14T09:09:47Z")),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("specversion".to_owned()),
                    Just("id".to_owned()),
                    Just("type".to_owned()),
                    Just("source".to_owned()),
                    Just("time".to_owned()),
                    Just("data".to_owned()),
                    Just("state".to_owned()),
                    Just("resource".to_owned()),
                    Just("properties".to_owned()),
                    Just("lastModified".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object shaped like a CloudEvent whose attributes are arbitrary (control characters,
/// empty strings, wrong types, odd sources and times).
fn envelope() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        ".{0,24}",
        "\\PC{0,24}",
        Just(String::new()),
        Just("   ".to_owned())
    ];
    let source = prop_oneof![
        "(/api/v1/projects/[a-z]{0,4}(/[a-zA-Z]{0,12}/[a-z0-9%.]{0,6}){0,5})",
        "https?://[a-z.]{0,10}(/[a-zA-Z0-9%]{0,8}){0,8}",
        ".{0,40}",
    ];
    let event_type = prop_oneof![
        Just("MediaKind.JobFinished".to_owned()),
        Just("MediaKind.JobStarted".to_owned()),
        Just("MediaKind.ChannelInstanceStopped".to_owned()),
        Just("MediaKind.StreamingLocatorCreated".to_owned()),
        "MediaKind\\.[A-Za-z]{0,12}",
        ".{0,12}",
    ];
    let time = prop_oneof![
        Just(Value::Null),
        "20[0-9]{2}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::String),
        ".{0,30}".prop_map(Value::String),
        json_value(),
    ];
    (
        prop_oneof![Just(json!("1.0")), json_value()],
        prop_oneof![text.clone().prop_map(Value::String), json_value()],
        event_type.prop_map(Value::String),
        source.prop_map(Value::String),
        time,
        json_value(),
    )
        .prop_map(|(sv, id, ty, source, time, data)| {
            json!({"specversion": sv, "id": id, "type": ty, "source": source,
                   "time": time, "data": data})
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(at, mask) => {
                if !bytes.is_empty() {
                    bytes[at % len] ^= mask;
                }
            }
            Mutation::Delete(at, n) => {
                let start = (at % len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Insert(at, more) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, more.iter().copied());
            }
            Mutation::Duplicate(at, n) => {
                let start = (at % len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(a, m)| Mutation::Flip(a, m)),
        (any::<usize>(), 1..64usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    b"{".to_vec(),
                    b"}".to_vec(),
                    b"[".to_vec(),
                    b"\"".to_vec(),
                    b",".to_vec(),
                    b"\\u0000".to_vec(),
                    b"\\ud800".to_vec(),
                    b"null".to_vec(),
                    vec![0xff],
                ])
            ]
        )
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1..256usize).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(config(DECODE_CASES))]

    /// The decoder reads a structured event's attributes and the view of its `data` in one
    /// pass; decoding the parsed value (`CloudEvent::from_json`, then normalizing) must accept
    /// and refuse the same envelopes, with the same message, and store the same event.
    #[test]
    fn one_pass_decoding_matches_the_parsed_value(value in envelope()) {
        let body = value.to_string();
        let decoded = decode(&headers("application/cloudevents+json", false), body.as_bytes(), RECEIVED_MS)
            .map(|mut events| events.remove(0))
            .map_err(|e| e.to_string());
        let parsed = CloudEvent::from_json(value)
            .map(|event| NewEvent::normalize(event, body.clone().into_bytes(), RECEIVED_MS, Origin::Webhook))
            .map_err(|e| e.to_string());
        prop_assert_eq!(decoded, parsed, "{}", body);
    }

    #[test]
    fn arbitrary_bytes_are_accepted_or_rejected_never_a_panic(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        ct in prop::sample::select(CONTENT_TYPES.to_vec()),
        binary in any::<bool>(),
    ) {
        decode_and_normalize(&headers(ct, binary), &body);
    }

    /// Short bodies of JSON punctuation: quotes, escapes and brackets in every order, where
    /// hand-written scanners overrun (a body ending in `"\` once did).
    #[test]
    fn json_punctuation_is_accepted_or_rejected_never_a_panic(
        body in prop::collection::vec(
            prop::sample::select(b"\"\\[]{}:,a1 ".to_vec()),
            0..48,
        ),
        ct in prop::sample::select(CONTENT_TYPES.to_vec()),
        binary in any::<bool>(),
    ) {
        decode_and_normalize(&headers(ct, binary), &body);
    }

    #[test]
    fn arbitrary_json_values_are_accepted_or_rejected_never_a_panic(
        value in json_value(),
        ct in prop::sample::select(CONTENT_TYPES.to_vec()),
        binary in any::<bool>(),
    ) {
        decode_and_normalize(&headers(ct, binary), value.to_string().as_bytes());
    }

    #[test]
    fn a_structured_event_is_accepted_exactly_when_it_is_a_valid_cloudevent(
        value in envelope(),
        ct in prop::sample::select(vec!["application/json", "application/cloudevents+json"]),
    ) {
        let body = value.to_string();
        let accepted = decode_and_normalize(&headers(ct, false), body.as_bytes());
        prop_assert_eq!(accepted, CloudEvent::from_json(value.clone()).is_ok(), "{}", body);
        // The same event as the single element of a batch gets the same verdict.
        let batch = format!("[{body}]");
        let in_batch = decode_and_normalize(
            &headers("application/cloudevents-batch+json", false),
            batch.as_bytes(),
        );
        prop_assert_eq!(in_batch, accepted);
    }

    #[test]
    fn mutated_fixtures_are_accepted_or_rejected_never_a_panic(
        name in prop::sample::select(VALID_FIXTURES.to_vec()),
        mutations in prop::collection::vec(mutation(), 1..6),
        ct in prop::sample::select(CONTENT_TYPES.to_vec()),
    ) {
        let body = mutate(common::fixture(name), &mutations);
        decode_and_normalize(&headers(ct, false), &body);
    }
}

#[test]
fn every_valid_fixture_is_accepted() {
    // The mutation property starts from inputs that are accepted unmutated.
    for name in VALID_FIXTURES {
        let ct = "application/json";
        assert!(
            decode_and_normalize(&headers(ct, false), &common::fixture(name)),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Non-regression

const JOB_STATES: [&str; 7] = [
    "Queued",
    "Scheduled",
    "Processing",
    "Canceling",
    "Finished",
    "Error",
    "Canceled",
];
const TERMINAL: [&str; 3] = ["Finished", "Error", "Canceled"];

/// One job event: its state and its time (seconds past a base; equal times are allowed).
#[derive(Clone, Debug)]
struct JobEvent {
    state: &'static str,
    secs: i64,
}

/// A job's history: at most one distinct terminal state (two different terminal states would
/// make the first to arrive win, by design: terminal is absorbing), times in any order.
fn history() -> impl Strategy<Value = Vec<JobEvent>> {
    (
        prop::sample::select(TERMINAL.to_vec()),
        prop::collection::vec((0..5usize, 0..6i64), 1..=MAX_EVENTS),
    )
        .prop_map(|(terminal, picks)| {
            picks
                .into_iter()
                .map(|(rank, secs)| JobEvent {
                    state: if rank == 4 {
                        terminal
                    } else {
                        JOB_STATES[rank]
                    },
                    secs,
                })
                .collect()
        })
}

/// Arrival orders: permutations of the history where each event may also arrive twice.
fn arrivals(n: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(
        (
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(any::<bool>(), n),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(order, twice, at)| {
                let mut out = order.clone();
                for (i, dup) in twice.iter().enumerate() {
                    if *dup {
                        out.insert(at.index(out.len() + 1), order[i]);
                    }
                }
                out
            }),
        ORDERS_PER_CASE,
    )
}

fn case() -> impl Strategy<Value = (Vec<JobEvent>, Vec<Vec<usize>>)> {
    history().prop_flat_map(|h| {
        let n = h.len();
        (Just(h), arrivals(n))
    })
}

/// The rank rule's answer: the state of highest rank (unique by construction).
fn expected(history: &[JobEvent]) -> &'static str {
    history
        .iter()
        .max_by_key(|e| job_rank(e.state))
        .expect("non-empty")
        .state
}

/// Applies the events in arrival order with the domain rule; checks each step never lowers
/// the rank, and returns the final state.
fn project(history: &[JobEvent], order: &[usize]) -> &'static str {
    let obs = |i: usize, seq: usize| Observation {
        state: history[i].state,
        version_ms: history[i].secs * 1000,
        event_ms: history[i].secs * 1000,
        seq: seq as i64,
    };
    let mut current = obs(order[0], 0);
    for (seq, &i) in order.iter().enumerate().skip(1) {
        let next = obs(i, seq);
        if supersedes(ResourceKind::Job, &current, &next) {
            assert!(
                job_rank(next.state) >= job_rank(current.state),
                "regressed from {} to {}",
                current.state,
                next.state
            );
            current = next;
        }
    }
    current.state
}

#[test]
fn the_domain_rule_never_regresses_a_job_whatever_the_order_and_duplication() {
    TestRunner::new(config(DOMAIN_CASES))
        .run(&case(), |(history, orders)| {
            let want = expected(&history);
            for order in &orders {
                prop_assert_eq!(
                    project(&history, order),
                    want,
                    "{:?} in order {:?}",
                    history,
                    order
                );
            }
            Ok(())
        })
        .unwrap();
}

/// A CloudEvent for `job` in `e.state`, normalized as the ingest path does.
fn new_event(job: &str, index: usize, e: &JobEvent) -> NewEvent {
    let ty = if TERMINAL.contains(&e.state) {
        "MediaKind.JobFinished"
    } else {
        "MediaKind.JobStarted"
    };
    let time = format!("2025-03-14T09:00:{:02}Z", e.secs);
    let value = json!({
        "specversion": "1.0", "id": format!("{job}-e{index}"), "type": ty,
        "source": format!("/api/v1/projects/prop/transforms/t/jobs/{job}"),
        "time": time,
        "data": {"projectName": "prop", "state": e.state,
                 "resource": {"name": job, "properties": {"state": e.state, "lastModified": time}}}
    });
    let raw = value.to_string().into_bytes();
    let event = CloudEvent::from_json(value).expect("valid event");
    NewEvent::normalize(event, raw, RECEIVED_MS, Origin::Webhook)
}

#[test]
fn the_sqlite_store_never_regresses_a_job_whatever_the_order_and_duplication() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("prop.db").display());
    let options = StoreOptions {
        max_connections: 2,
        busy_timeout: Duration::from_secs(5),
    };
    let store: Arc<dyn Store> = rt.block_on(async {
        let s = store::open(&url, &options).await.unwrap();
        s.migrate().await.unwrap();
        s
    });
    let jobs = std::sync::atomic::AtomicU32::new(0);
    TestRunner::new(config(STORE_CASES))
        .run(
            &(case(), prop::collection::vec(1..4usize, 8)),
            |((history, orders), chunks)| {
                let want = expected(&history);
                for order in &orders {
                    let n = jobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let job = format!("job-{n}");
                    let events: Vec<NewEvent> = order
                        .iter()
                        .map(|&i| new_event(&job, i, &history[i]))
                        .collect();
                    let state = rt.block_on(async {
                        // Appended alone and in small batches (one transaction each), as the
                        // writer's group commit would.
                        let mut rest = &events[..];
                        for size in chunks.iter().cycle() {
                            if rest.is_empty() {
                                break;
                            }
                            let (now, later) = rest.split_at((*size).min(rest.len()));
                            store.append(now).await.expect("append");
                            rest = later;
                        }
                        let rows = store
                            .resources(&ResourceQuery {
                                kind: Some(ResourceKind::Job),
                                project: Some("prop".into()),
                                name: Some(job.clone()),
                                limit: 10,
                                ..ResourceQuery::default()
                            })
                            .await
                            .expect("resources");
                        assert_eq!(rows.len(), 1, "{job}: {rows:?}");
                        rows[0].state.clone()
                    });
                    prop_assert_eq!(state.as_str(), want, "{:?} in order {:?}", history, order);
                }
                Ok(())
            },
        )
        .unwrap();
}
