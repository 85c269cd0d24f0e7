//! The store contract: the same scenarios against every backend (SQLite always, Postgres when
//! `MKIO_RELAY_TEST_POSTGRES_URL` is set).

mod common;

use common::{each_backend, TestDb};
use mkio_relay::domain::event::{CloudEvent, NewEvent, Origin};
use mkio_relay::domain::resource::ResourceKind;
use mkio_relay::store::{self, Appended, EventQuery, ResourceQuery, Store, StoreOptions};
use serde_json::json;
use std::sync::Arc;

async fn open(db: &TestDb) -> Arc<dyn Store> {
    let store = store::open(&db.url(), &StoreOptions::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    store
}

fn event(id: &str, source: &str, event_type: &str, state: &str, time: &str) -> NewEvent {
    let envelope = json!({
        "specversion": "1.0", "id": id, "type": event_type, "source": source, "time": time,
        "data": {"projectName": "p", "state": state}
    });
    let raw = serde_json::to_vec(&envelope).expect("json");
    let ce = CloudEvent::from_json(envelope).expect("valid event");
    NewEvent::normalize(ce, raw, 1_000, Origin::Webhook)
}

const JOB: &str = "/api/v1/projects/p/transforms/t/jobs/j";
const CHANNEL: &str = "/api/v1/projects/p/live/liveChannels/c";

fn job(id: &str, state: &str, time: &str) -> NewEvent {
    let t = if state == "Processing" {
        "MediaKind.JobStarted"
    } else {
        "MediaKind.JobFinished"
    };
    event(id, JOB, t, state, time)
}

async fn state_of(store: &dyn Store, kind: ResourceKind, name: &str) -> Option<String> {
    let rows = store
        .resources(&ResourceQuery {
            kind: Some(kind),
            name: Some(name.into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("resources");
    assert!(rows.len() <= 1);
    rows.first().map(|r| r.state.clone())
}

async fn all_events(store: &dyn Store) -> Vec<store::StoredEvent> {
    store
        .events(&EventQuery {
            after: 0,
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("events")
}

#[tokio::test]
async fn duplicates_are_stored_once_across_and_within_batches() {
    each_backend(|db| async move {
        let store = open(&db).await;
        let e = job("a", "Finished", "2025-01-01T00:00:02Z");
        let first = store.append(std::slice::from_ref(&e)).await.unwrap();
        // No subscription: nothing to deliver.
        assert!(matches!(
            first[0],
            Appended::Stored {
                applied: true,
                queued: false,
                ..
            }
        ));
        assert_eq!(
            store.append(std::slice::from_ref(&e)).await.unwrap(),
            [Appended::Duplicate]
        );
        let b = job("b", "Finished", "2025-01-01T00:00:03Z");
        let out = store.append(&[b.clone(), b]).await.unwrap();
        assert!(matches!(out[0], Appended::Stored { .. }));
        assert_eq!(out[1], Appended::Duplicate);
        assert_eq!(all_events(store.as_ref()).await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn job_state_never_regresses_in_either_order() {
    each_backend(|db| async move {
        let store = open(&db).await;
        // Finished first, in its own transaction; Started later.
        store
            .append(&[job("f", "Finished", "2025-01-01T00:00:02Z")])
            .await
            .unwrap();
        let out = store
            .append(&[job("s", "Processing", "2025-01-01T00:00:01Z")])
            .await
            .unwrap();
        assert!(matches!(out[0], Appended::Stored { applied: false, .. }));
        assert_eq!(
            state_of(store.as_ref(), ResourceKind::Job, "j")
                .await
                .as_deref(),
            Some("Finished")
        );
        // Both inside one batch, reversed: the same result.
        let db2 = TestDb::sqlite();
        let store2 = open(&db2).await;
        store2
            .append(&[
                job("f", "Finished", "2025-01-01T00:00:02Z"),
                job("s", "Processing", "2025-01-01T00:00:01Z"),
            ])
            .await
            .unwrap();
        assert_eq!(
            state_of(store2.as_ref(), ResourceKind::Job, "j")
                .await
                .as_deref(),
            Some("Finished")
        );
        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].state.as_deref(), Some("Processing"));
        assert!(!events[1].applied);
    })
    .await;
}

#[tokio::test]
async fn other_kinds_follow_event_time() {
    each_backend(|db| async move {
        let store = open(&db).await;
        let stopped = event(
            "1",
            CHANNEL,
            "MediaKind.ChannelInstanceStopped",
            "Stopped",
            "2025-03-14T22:30:09Z",
        );
        let started = event(
            "2",
            CHANNEL,
            "MediaKind.ChannelInstanceStarted",
            "Running",
            "2025-03-14T06:00:21Z",
        );
        let error = event(
            "3",
            CHANNEL,
            "MediaKind.ChannelInstanceError",
            "UnableToStart",
            "2025-03-13T06:04:12Z",
        );
        store.append(&[stopped]).await.unwrap();
        store.append(&[started, error]).await.unwrap();
        assert_eq!(
            state_of(store.as_ref(), ResourceKind::LiveChannel, "c")
                .await
                .as_deref(),
            Some("Stopped")
        );
        let restarted = event(
            "4",
            CHANNEL,
            "MediaKind.ChannelInstanceStarted",
            "Running",
            "2025-03-15T06:00:00Z",
        );
        store.append(&[restarted]).await.unwrap();
        let rows = store
            .resources(&ResourceQuery {
                kind: Some(ResourceKind::LiveChannel),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows[0].state, "Running");
        assert_eq!(rows[0].previous_state.as_deref(), Some("Stopped"));
        assert_eq!(rows[0].created_ms, 1_000);
    })
    .await;
}

#[tokio::test]
async fn unknown_types_and_sources_never_touch_state() {
    each_backend(|db| async move {
        let store = open(&db).await;
        let unknown_type = event(
            "1",
            "/api/v1/projects/p/media/assets/a",
            "MediaKind.SomethingNew",
            "Ready",
            "2025-01-01T00:00:00Z",
        );
        let unknown_source = event(
            "2",
            "/somewhere/else",
            "MediaKind.JobFinished",
            "Finished",
            "2025-01-01T00:00:00Z",
        );
        let out = store.append(&[unknown_type, unknown_source]).await.unwrap();
        assert!(out
            .iter()
            .all(|o| matches!(o, Appended::Stored { applied: false, .. })));
        let rows = store
            .resources(&ResourceQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(rows.is_empty());
        let events = all_events(store.as_ref()).await;
        assert_eq!(events[0].kind, "unknown");
        assert_eq!(events[0].resource_kind, "asset");
        assert_eq!(events[1].kind, "unknown");
    })
    .await;
}

#[tokio::test]
async fn sequence_numbers_increase_and_pages_filter() {
    each_backend(|db| async move {
        let store = open(&db).await;
        for i in 0..30 {
            let source = format!("/api/v1/projects/p{}/transforms/t/jobs/j{i}", i % 3);
            store
                .append(&[event(
                    &i.to_string(),
                    &source,
                    "MediaKind.JobStarted",
                    "Processing",
                    "2025-01-01T00:00:00Z",
                )])
                .await
                .unwrap();
        }
        let all = all_events(store.as_ref()).await;
        assert_eq!(all.len(), 30);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.last_seq().await.unwrap(), all[29].seq);
        let page = store
            .events(&EventQuery {
                after: all[9].seq,
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            all[10..15].iter().map(|e| e.seq).collect::<Vec<_>>()
        );
        let p1 = store
            .events(&EventQuery {
                after: 0,
                limit: 100,
                project: Some("p1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(p1.len(), 10);
        assert!(p1.iter().all(|e| e.project == "p1"));
        let typed = store
            .events(&EventQuery {
                after: 0,
                limit: 100,
                event_type: Some("MediaKind.JobFinished".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(typed.is_empty());
        let kind = store
            .events(&EventQuery {
                after: 0,
                limit: 100,
                kind: Some(ResourceKind::Job),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(kind.len(), 30);
        // Keyset paging over resources visits every row once.
        let mut cursor = None;
        let mut seen = 0;
        loop {
            let rows = store
                .resources(&ResourceQuery {
                    limit: 7,
                    after: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            seen += rows.len();
            let Some(last) = rows.last() else { break };
            cursor = Some(store::ResourceCursor {
                kind: last.kind.as_str().into(),
                project: last.project.clone(),
                parent: last.parent.clone(),
                name: last.name.clone(),
            });
        }
        assert_eq!(seen, 30);
    })
    .await;
}

#[tokio::test]
async fn events_keep_their_data_and_survive_reopening() {
    each_backend(|db| async move {
        {
            let store = open(&db).await;
            store
                .append(&[job("a", "Finished", "2025-01-01T00:00:02Z")])
                .await
                .unwrap();
        }
        let store = open(&db).await;
        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].data,
            json!({"projectName": "p", "state": "Finished"})
        );
        assert_eq!(events[0].time.as_deref(), Some("2025-01-01T00:00:02Z"));
        assert_eq!(
            events[0].source,
            "/api/v1/projects/p/media/transforms/t/jobs/j"
        );
        assert_eq!(
            store
                .append(&[job("a", "Finished", "2025-01-01T00:00:02Z")])
                .await
                .unwrap(),
            [Appended::Duplicate]
        );
        store.ping().await.unwrap();
    })
    .await;
}

/// Two stores on one database (two replicas) appending at once: every event stored once,
/// sequence numbers unique, and a reader paging by `seq` sees them all.
#[tokio::test]
async fn concurrent_writers_on_one_database() {
    each_backend(|db| async move {
        let a = open(&db).await;
        let b = open(&db).await;
        let write = |store: Arc<dyn Store>, prefix: &'static str| {
            tokio::spawn(async move {
                for i in 0..50 {
                    let source = format!("/api/v1/projects/p/transforms/t/jobs/{prefix}{i}");
                    let e = event(
                        &format!("{prefix}{i}"),
                        &source,
                        "MediaKind.JobStarted",
                        "Processing",
                        "2025-01-01T00:00:00Z",
                    );
                    // The same event through both replicas: stored once.
                    store.append(&[e]).await.expect("append");
                }
            })
        };
        let tasks = [
            write(a.clone(), "x"),
            write(b.clone(), "y"),
            write(a.clone(), "y"),
            write(b.clone(), "x"),
        ];
        for t in tasks {
            t.await.unwrap();
        }
        let events = all_events(a.as_ref()).await;
        assert_eq!(events.len(), 100);
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    })
    .await;
}

/// On Postgres, a commit through one store wakes a listener on another (LISTEN/NOTIFY).
#[tokio::test]
async fn commits_are_announced_to_other_processes() {
    let Ok(url) = std::env::var(common::POSTGRES_ENV) else {
        return;
    };
    let db = TestDb::postgres(&url).await;
    let (a, b) = (open(&db).await, open(&db).await);
    let woken = Arc::new(tokio::sync::Notify::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    let listener = tokio::spawn({
        let (a, woken, cancel) = (a.clone(), woken.clone(), cancel.clone());
        async move { a.listen_commits(woken, cancel).await }
    });
    // The listener wakes once when it starts listening.
    tokio::time::timeout(std::time::Duration::from_secs(10), woken.notified())
        .await
        .expect("listening");
    b.append(&[job("n1", "Finished", "2025-01-01T00:00:00Z")])
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), woken.notified())
        .await
        .expect("a commit in another store is announced");
    cancel.cancel();
    listener.await.unwrap().unwrap();
}

/// A batch larger than one multi-row statement, with duplicates inside it and against the
/// store, keeps every rule.
#[tokio::test]
async fn large_batches_are_chunked_correctly() {
    each_backend(|db| async move {
        let store = open(&db).await;
        store
            .append(&[event(
                "dup-0",
                "/api/v1/projects/p/transforms/t/jobs/j0",
                "MediaKind.JobFinished",
                "Finished",
                "2025-01-01T00:00:05Z",
            )])
            .await
            .unwrap();
        let mut batch = Vec::new();
        for i in 0..1300 {
            let job = i % 650; // two events per job
            let source = format!("/api/v1/projects/p/transforms/t/jobs/j{job}");
            let (t, state) = if i < 650 {
                ("MediaKind.JobStarted", "Processing")
            } else {
                ("MediaKind.JobFinished", "Finished")
            };
            batch.push(event(
                &format!("e{i}"),
                &source,
                t,
                state,
                "2025-01-01T00:00:01Z",
            ));
        }
        batch.push(batch[5].clone()); // a duplicate inside the batch
        batch.push(event(
            "dup-0",
            "/api/v1/projects/p/transforms/t/jobs/j0",
            "MediaKind.JobFinished",
            "Finished",
            "2025-01-01T00:00:05Z",
        ));
        let out = store.append(&batch).await.unwrap();
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Appended::Stored { .. }))
                .count(),
            1300
        );
        assert_eq!(out[1300], Appended::Duplicate);
        assert_eq!(out[1301], Appended::Duplicate);
        let seqs: Vec<i64> = out
            .iter()
            .filter_map(|o| match o {
                Appended::Stored { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "sequence follows batch order"
        );
        let rows = store
            .resources(&ResourceQuery {
                kind: Some(ResourceKind::Job),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 650);
        assert!(
            rows.iter().all(|r| r.state == "Finished"),
            "every job ends Finished"
        );
        let j7 = rows.iter().find(|r| r.name == "j7").unwrap();
        assert_eq!(
            Some(j7.last_seq),
            seqs.get(657).copied(),
            "last_seq is the real sequence number"
        );
        assert_eq!(j7.previous_state.as_deref(), Some("Processing"));
    })
    .await;
}

/// `data` is read back from the raw bytes: a structured envelope's `data` member, or the whole
/// body of a binary-mode event.
#[tokio::test]
async fn data_round_trips_for_both_content_modes() {
    each_backend(|db| async move {
        let store = open(&db).await;
        let structured = event(
            "s",
            JOB,
            "MediaKind.JobStarted",
            "Processing",
            "2025-01-01T00:00:00Z",
        );
        let data = json!({"projectName": "p", "state": "Finished", "nested": [1, {"a": null}]});
        let ce = CloudEvent::new(
            "1.0",
            "b".into(),
            "MediaKind.JobFinished".into(),
            JOB.into(),
            None,
            data.clone(),
        )
        .unwrap();
        let binary =
            NewEvent::normalize(ce, serde_json::to_vec(&data).unwrap(), 1, Origin::Webhook);
        store.append(&[structured, binary]).await.unwrap();
        let events = all_events(store.as_ref()).await;
        assert_eq!(
            events[0].data,
            json!({"projectName": "p", "state": "Processing"})
        );
        assert_eq!(events[1].data, data);
    })
    .await;
}

fn subscription_to_everything() -> mkio_relay::store::outbox::Subscription {
    mkio_relay::store::outbox::Subscription {
        id: "all".into(),
        url: "http://127.0.0.1:9/hook".into(),
        filter: Default::default(),
        enabled: true,
        retry_schedule: None,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        previous_secret: None,
        previous_secret_until_ms: None,
        disabled_reason: None,
        origin: "api".into(),
        created_ms: 0,
        updated_ms: 0,
    }
}

async fn queued_deliveries(store: &dyn Store) -> Vec<i64> {
    store
        .deliveries("all", None, 0, 100)
        .await
        .expect("deliveries")
        .iter()
        .map(|d| d.seq)
        .collect()
}

/// A transition seen by polling and then by its webhook (or the other way round) is one
/// transition: the second report is stored but queues no delivery and changes no state.
#[tokio::test]
async fn a_polled_transition_and_its_webhook_count_once_in_either_order() {
    use mkio_relay::domain::polled::polled_event;
    each_backend(|db| async move {
        let store = open(&db).await;
        store
            .put_subscription(&subscription_to_everything())
            .await
            .unwrap();
        let ms = |t: &str| mkio_relay::domain::time::parse_rfc3339_ms(t).unwrap();
        // Poll first: the poll is the transition, the webhook confirms it.
        let poll = polled_event(
            "/api/v1/projects/p/media/transforms/t/jobs/j",
            "Finished",
            Some("Processing"),
            json!({}),
            ms("2025-01-01T00:00:05Z"),
            ms("2025-01-01T00:00:05Z"),
        );
        let out = store.append(&[poll]).await.unwrap();
        assert!(
            matches!(out[0], Appended::Stored { queued: true, .. }),
            "{out:?}"
        );
        let out = store
            .append(&[job("w1", "Finished", "2025-01-01T00:00:04Z")])
            .await
            .unwrap();
        // Stored, but nothing queued: the writer leaves the dispatcher asleep.
        assert!(
            matches!(out[0], Appended::Stored { queued: false, .. }),
            "{out:?}"
        );
        assert_eq!(all_events(store.as_ref()).await.len(), 2);
        assert_eq!(
            queued_deliveries(store.as_ref()).await.len(),
            1,
            "one delivery"
        );
        let rows = store
            .resources(&ResourceQuery {
                kind: Some(ResourceKind::Job),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows[0].state, "Finished");
        assert_eq!(
            rows[0].previous_state, None,
            "the poll was the first report"
        );
        assert_eq!(rows[0].origin, Origin::Webhook, "the webhook's details now");

        // A later, different webhook state is a transition again (channel, time-ordered).
        let poll = polled_event(
            CHANNEL,
            "Running",
            None,
            json!({}),
            ms("2025-01-01T00:01:00Z"),
            ms("2025-01-01T00:01:00Z"),
        );
        store.append(&[poll]).await.unwrap();
        let confirm = event(
            "c1",
            CHANNEL,
            "MediaKind.ChannelInstanceStarted",
            "Running",
            "2025-01-01T00:01:01Z",
        );
        store.append(&[confirm]).await.unwrap();
        assert_eq!(queued_deliveries(store.as_ref()).await.len(), 2);
        let stop = event(
            "c2",
            CHANNEL,
            "MediaKind.ChannelInstanceStopped",
            "Stopped",
            "2025-01-01T00:02:00Z",
        );
        store.append(&[stop]).await.unwrap();
        assert_eq!(queued_deliveries(store.as_ref()).await.len(), 3);
        assert_eq!(
            state_of(store.as_ref(), ResourceKind::LiveChannel, "c").await,
            Some("Stopped".into())
        );
    })
    .await;
}

#[tokio::test]
async fn watches_and_leases() {
    use mkio_relay::store::watches::{OnExisting, PollRecord, WatchQuery, WatchRow};
    each_backend(|db| async move {
        let store = open(&db).await;
        let w = |id: &str, path: &str, next: i64| WatchRow {
            id: id.into(),
            path: path.into(),
            project: "p".into(),
            source: "api".into(),
            until_states: Some("Running".into()),
            status: "active".into(),
            last_state: None,
            interval_ms: 0,
            next_poll_ms: next,
            last_polled_ms: None,
            polls: 0,
            error: None,
            created_ms: 1,
            updated_ms: 1,
        };
        let se = "/api/v1/projects/p/media/streamingEndpoints/se";
        let le = "/api/v1/projects/p/media/liveEvents/le";
        let a = store
            .add_watch(&w("w_a", se, 100), OnExisting::Keep)
            .await
            .unwrap();
        assert_eq!(a.id, "w_a");
        // Same path: the existing watch is returned.
        let again = store
            .add_watch(&w("w_b", se, 50), OnExisting::ReviveInactive)
            .await
            .unwrap();
        assert_eq!(again.id, "w_a");
        store
            .add_watch(&w("w_c", le, 300), OnExisting::Keep)
            .await
            .unwrap();
        let due = store.due_watches("p", 200, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
            ["w_a"]
        );
        assert_eq!(store.next_watch_due("p").await.unwrap(), Some(100));
        assert_eq!(store.next_watch_due("other").await.unwrap(), None);
        let done = PollRecord {
            status: "done".into(),
            last_state: Some("Running".into()),
            interval_ms: 5_000,
            next_poll_ms: 10_000,
            polled_ms: 150,
            error: None,
        };
        store.record_poll("w_a", &done).await.unwrap();
        assert_eq!(store.next_watch_due("p").await.unwrap(), Some(300));
        let rows = store
            .watches(&WatchQuery {
                id: Some("w_a".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows[0].status, "done");
        assert_eq!(rows[0].polls, 1);
        assert_eq!(rows[0].last_state.as_deref(), Some("Running"));
        // A done watch is kept by Keep and revived by ReviveInactive.
        let kept = store
            .add_watch(&w("w_d", se, 1), OnExisting::Keep)
            .await
            .unwrap();
        assert_eq!(kept.status, "done");
        let revived = store
            .add_watch(&w("w_e", se, 1), OnExisting::ReviveInactive)
            .await
            .unwrap();
        assert_eq!(
            (revived.id.as_str(), revived.status.as_str()),
            ("w_a", "active")
        );
        let page = store
            .watches(&WatchQuery {
                project: Some("p".into()),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        let rest = store
            .watches(&WatchQuery {
                after_id: page[0].id.clone(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert!(store.delete_watch("w_c").await.unwrap());
        assert!(!store.delete_watch("w_c").await.unwrap());

        // Leases: one holder at a time; renewable by the holder; taken over once expired.
        assert!(store
            .take_lease("poll:p", "r1", 1_000, 30_000)
            .await
            .unwrap());
        assert!(!store
            .take_lease("poll:p", "r2", 2_000, 30_000)
            .await
            .unwrap());
        assert!(store
            .take_lease("poll:p", "r1", 20_000, 30_000)
            .await
            .unwrap());
        assert!(!store
            .take_lease("poll:p", "r2", 49_000, 30_000)
            .await
            .unwrap());
        assert!(store
            .take_lease("poll:p", "r2", 50_001, 30_000)
            .await
            .unwrap());
        store.release_lease("poll:p", "r2").await.unwrap();
        assert!(store
            .take_lease("poll:p", "r3", 50_002, 30_000)
            .await
            .unwrap());

        // Stale jobs: non-terminal, no event since the cutoff, not watched yet.
        store
            .append(&[job("s1", "Processing", "2025-01-01T00:00:00Z")])
            .await
            .unwrap();
        let stale = store.stale_jobs("p", i64::MAX, 10).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert!(store.stale_jobs("p", 0, 10).await.unwrap().is_empty());
        assert!(store
            .stale_jobs("other", i64::MAX, 10)
            .await
            .unwrap()
            .is_empty());
        let mut jw = w("w_j", "/api/v1/projects/p/media/transforms/t/jobs/j", 1);
        jw.source = "safety_net".into();
        store.add_watch(&jw, OnExisting::Keep).await.unwrap();
        assert!(store
            .stale_jobs("p", i64::MAX, 10)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

/// Retention: payloads go first, event rows (the deduplication ledger) later, finished
/// deliveries with their attempts; current state and pending deliveries stay.
#[tokio::test]
async fn retention_prunes_in_steps_and_keeps_state_and_pending_deliveries() {
    use mkio_relay::config::RetentionConfig;
    use mkio_relay::store::outbox::{AttemptOutcome, AttemptRecord, AttemptResult};
    use mkio_relay::upkeep::Retention;
    use std::time::Duration;
    each_backend(|db| async move {
        let store = open(&db).await;
        store
            .put_subscription(&subscription_to_everything())
            .await
            .unwrap();
        // Five old events (received at 1 s after the epoch), one for a channel.
        let mut old: Vec<NewEvent> = (0..4)
            .map(|i| job(&format!("old{i}"), "Processing", "2025-01-01T00:00:00Z"))
            .collect();
        old.push(event(
            "c-old",
            CHANNEL,
            "MediaKind.ChannelInstanceStarted",
            "Running",
            "2025-01-01T00:00:00Z",
        ));
        store.append(&old).await.unwrap();
        // Deliver two of them.
        let now = mkio_relay::domain::time::now_ms();
        let claimed = store.claim_deliveries(now, now + 60_000, 2).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let results: Vec<AttemptResult> = claimed
            .into_iter()
            .map(|claimed| AttemptResult {
                claimed,
                attempt: AttemptRecord {
                    started_ms: 1_000,
                    status: Some(200),
                    latency_ms: 1,
                    error: None,
                },
                outcome: AttemptOutcome::Delivered,
            })
            .collect();
        store.finish_deliveries(&results, 1_000).await.unwrap();
        // A young event, received now.
        let envelope = json!({"specversion": "1.0", "id": "young", "type": "MediaKind.JobFinished",
            "source": JOB, "time": "2025-01-01T00:00:09Z", "data": {"state": "Finished"}});
        let young = NewEvent::normalize(
            CloudEvent::from_json(envelope.clone()).unwrap(),
            serde_json::to_vec(&envelope).unwrap(),
            now,
            Origin::Webhook,
        );
        store.append(&[young]).await.unwrap();

        let config = |payloads: u64, dedupe: u64, deliveries: u64| RetentionConfig {
            payloads: Duration::from_secs(payloads),
            dedupe: Duration::from_secs(dedupe),
            deliveries: Duration::from_secs(deliveries),
            batch_size: 2,
            interval: Duration::from_secs(60),
        };
        // Payloads older than an hour: the five old ones, in steps of two.
        let removed = Retention::new(store.clone(), config(3600, 0, 0))
            .run_once()
            .await;
        assert_eq!(removed, [5, 0, 0]);
        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 6);
        assert!(events[..5].iter().all(|e| e.data.is_null()), "{events:?}");
        assert!(!events[5].data.is_null(), "the young payload stays");
        // Still deduplicated.
        let again = store
            .append(&[job("old0", "Processing", "2025-01-01T00:00:00Z")])
            .await
            .unwrap();
        assert_eq!(again[0], Appended::Duplicate);

        // Finished deliveries older than an hour: the two delivered; pending ones stay.
        let pending_before = store
            .deliveries("all", Some("pending"), 0, 100)
            .await
            .unwrap()
            .len();
        let removed = Retention::new(store.clone(), config(0, 0, 3600))
            .run_once()
            .await;
        assert_eq!(removed, [0, 0, 2]);
        let left = store.deliveries("all", None, 0, 100).await.unwrap();
        assert!(left.iter().all(|d| d.state == "pending"), "{left:?}");
        assert_eq!(left.len(), pending_before);

        // Event rows older than an hour; current state stays.
        let removed = Retention::new(store.clone(), config(0, 3600, 0))
            .run_once()
            .await;
        assert_eq!(removed, [0, 5, 0]);
        assert_eq!(all_events(store.as_ref()).await.len(), 1);
        assert_eq!(
            state_of(store.as_ref(), ResourceKind::LiveChannel, "c").await,
            Some("Running".into())
        );
        assert_eq!(
            state_of(store.as_ref(), ResourceKind::Job, "j").await,
            Some("Finished".into())
        );
    })
    .await;
}

/// Under steady appends a PASSIVE checkpoint never catches the WAL's end, so the WAL would
/// never start over and would grow by every commit; `maintain` restarts it once it is long.
#[tokio::test]
async fn sqlite_wal_stays_bounded_under_steady_appends() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let wal =
        std::path::PathBuf::from(db.url().trim_start_matches("sqlite:")).with_extension("db-wal");
    let padding = "x".repeat(4000);
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            // About 100 MiB of events, committed back to back in batches of 20.
            for batch in 0..1250 {
                let events: Vec<NewEvent> = (0..20)
                    .map(|i| {
                        let n = batch * 20 + i;
                        let mut e = job(&format!("e{n}"), "Processing", "2025-01-01T00:00:00Z");
                        e.source = format!("{JOB}-{n}");
                        e.key.name = format!("j-{n}");
                        e.raw.extend_from_slice(padding.as_bytes());
                        e
                    })
                    .collect();
                store.append(&events).await.expect("append");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut largest = 0;
    while !appender.is_finished() {
        store.maintain().await.expect("maintain");
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    appender.await.expect("appender");
    let db_size = std::fs::metadata(db.url().trim_start_matches("sqlite:"))
        .unwrap()
        .len();
    assert!(
        db_size > 90 << 20,
        "the test wrote {db_size} bytes, too few to show anything"
    );
    assert!(largest < 40 << 20, "the WAL grew to {largest} bytes");
}
