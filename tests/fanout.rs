//! Local consumers learn of changes without polling: long-poll waits, the event stream.

mod common;

use common::{each_backend, job_event, SseClient, TestDb, TestServer};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn job_waiter_returns_when_the_job_finishes() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let client = server.client.clone();
        let url = format!("{}/v1/jobs/p/t/j1?wait=20s", server.api);
        // Waiting on a job that does not exist yet.
        let waiter = tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = server
            .post(
                job_event("e1", "j1", "Processing").to_string(),
                "application/json",
            )
            .await;
        assert_eq!(started.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "Processing is not terminal");
        server
            .post(
                job_event("e2", "j1", "Finished").to_string(),
                "application/json",
            )
            .await;
        // The wait is 20s; a waiter that was not woken would come back after it, unmet.
        let (status, body) = tokio::time::timeout(LONG, waiter).await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "Finished");
        assert_eq!(body["condition_met"], true);

        // Already satisfied: answers at once (well inside the 60s wait it asks for).
        let (_, body) =
            tokio::time::timeout(LONG, server.get("/v1/jobs/p/t/j1?wait=60s&until=terminal"))
                .await
                .expect("an already-met condition answers at once");
        assert_eq!(body["condition_met"], true);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn waits_time_out_with_condition_met_false() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let (status, body) = server.get("/v1/jobs/p/t/nope?wait=300ms").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["condition_met"], false);
    server
        .post(
            job_event("e1", "j1", "Processing").to_string(),
            "application/json",
        )
        .await;
    let (status, body) = server.get("/v1/jobs/p/t/j1?wait=300ms").await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "Processing");
    assert_eq!(body["condition_met"], false);
    // An explicit state list.
    let (_, body) = server
        .get("/v1/jobs/p/t/j1?wait=300ms&until=Queued,Processing")
        .await;
    assert_eq!(body["condition_met"], true);
    // Bad parameters are 400s.
    for path in [
        "/v1/jobs/p/t/j1?wait=soon",
        "/v1/jobs/p/t/j1?until=Finished",
        "/v1/resources/live_channel/p/c?wait=1s&until=terminal",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn resource_waiter_without_until_returns_on_the_next_change() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    assert_eq!(
        server
            .post_fixture("channel-instance-started.json")
            .await
            .status(),
        200
    );
    let client = server.client.clone();
    let url = format!(
        "{}/v1/resources/live_channel/studio-prod/news-247?wait=20s",
        server.api
    );
    let waiter = tokio::spawn(async move {
        client
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    assert_eq!(
        server
            .post_fixture("channel-instance-stopped.json")
            .await
            .status(),
        200
    );
    let body = tokio::time::timeout(LONG, waiter).await.unwrap().unwrap();
    assert_eq!(body["state"], "Stopped");
    assert_eq!(body["condition_met"], true);
    server.stop().await;
}

#[tokio::test]
async fn events_long_poll_returns_the_next_event() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        server
            .post(
                job_event("e1", "j1", "Processing").to_string(),
                "application/json",
            )
            .await;
        let (_, first) = server.get("/v1/events").await;
        let head = first["next_after"].as_i64().unwrap();
        let client = server.client.clone();
        let url = format!(
            "{}/v1/events?after={head}&wait=20s&type=MediaKind.JobFinished",
            server.api
        );
        let poll = tokio::spawn(async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // An event the filter does not match does not end the wait.
        server
            .post(
                job_event("e2", "j2", "Processing").to_string(),
                "application/json",
            )
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!poll.is_finished());
        server
            .post(
                job_event("e3", "j1", "Finished").to_string(),
                "application/json",
            )
            .await;
        let body = tokio::time::timeout(LONG, poll).await.unwrap().unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{body}");
        assert_eq!(events[0]["id"], "e3");
        assert_eq!(body["next_after"], events[0]["seq"]);
        // Nothing new: an empty page after the wait, next_after unchanged.
        let after = body["next_after"].as_i64().unwrap();
        let (_, empty) = server
            .get(&format!("/v1/events?after={after}&wait=200ms"))
            .await;
        assert_eq!(empty["events"].as_array().unwrap().len(), 0);
        assert_eq!(empty["next_after"], after);
        server.stop().await;
    })
    .await;
}

async fn post_jobs(server: &TestServer, prefix: &str, count: usize) {
    let mut tasks = Vec::new();
    for chunk in 0..count.div_ceil(50) {
        let (client, url, prefix) = (
            server.client.clone(),
            format!("{}/webhooks/mkio", server.ingest),
            prefix.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            for i in chunk * 50..((chunk + 1) * 50).min(count) {
                let body = job_event(
                    &format!("{prefix}-{i}"),
                    &format!("{prefix}-job-{i}"),
                    "Processing",
                );
                let r = client
                    .post(&url)
                    .bearer_auth(common::SECRET)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Reads `count` events and checks they are in strictly increasing order with no repeats.
async fn read_in_order(stream: &mut SseClient, count: usize, after: i64) -> i64 {
    let mut last = after;
    for n in 0..count {
        let e = stream
            .next(LONG)
            .await
            .unwrap_or_else(|| panic!("stream ended after {n} of {count}"));
        let seq: i64 = e.id.as_deref().unwrap().parse().unwrap();
        assert!(seq > last, "out of order or repeated: {seq} after {last}");
        let body: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(body["seq"], seq);
        assert_eq!(e.event.as_deref(), body["type"].as_str());
        last = seq;
    }
    last
}

/// The case: a client away for 10 s while 1,000 events arrive gets all of them after
/// it reconnects (and the 100 that arrive while it catches up), in order, once each.
#[tokio::test]
async fn stream_resumes_after_a_disconnect_with_no_gap_and_no_duplicate() {
    each_backend(|db| async move {
        // A small buffer, so the resumed client is also served from the store.
        let server = TestServer::start(&db, &[("MKIO_RELAY_API_STREAM_BUFFER", "32")]).await;
        let url = format!("{}/v1/events/stream?after=0", server.api);
        let mut stream = SseClient::connect(&server.client, &url, None).await;
        post_jobs(&server, "a", 20).await;
        let last = read_in_order(&mut stream, 20, 0).await;
        drop(stream);
        // Away for 10 s while 1,000 events arrive, 100 a second.
        let away = tokio::time::Instant::now();
        for second in 0..10u64 {
            post_jobs(&server, &format!("b{second}"), 100).await;
            tokio::time::sleep_until(away + Duration::from_secs(second + 1)).await;
        }
        let mut resumed = SseClient::connect(
            &server.client,
            &format!("{}/v1/events/stream", server.api),
            Some(last),
        )
        .await;
        let writer = {
            let (client, ingest) = (server.client.clone(), server.ingest.clone());
            tokio::spawn(async move {
                for i in 0..100 {
                    let body = job_event(&format!("c-{i}"), &format!("c-job-{i}"), "Processing");
                    client
                        .post(format!("{ingest}/webhooks/mkio"))
                        .bearer_auth(common::SECRET)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                }
            })
        };
        let end = read_in_order(&mut resumed, 1_100, last).await;
        writer.await.unwrap();
        assert!(
            resumed.next(Duration::from_millis(300)).await.is_none(),
            "no extra events"
        );
        let (_, events) = server.get(&format!("/v1/events?after={end}")).await;
        assert_eq!(
            events["events"].as_array().unwrap().len(),
            0,
            "the stream saw everything"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stream_filters_and_starts_from_now_by_default() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    post_jobs(&server, "old", 3).await;
    let mut stream = SseClient::connect(
        &server.client,
        &format!("{}/v1/events/stream?type=MediaKind.JobFinished", server.api),
        None,
    )
    .await;
    post_jobs(&server, "new", 3).await;
    server
        .post(
            job_event("fin", "new-job-1", "Finished").to_string(),
            "application/json",
        )
        .await;
    let e = stream.next(LONG).await.unwrap();
    let body: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(body["id"], "fin");
    let (status, body) = server.get("/v1/events/stream?kind=gadget").await;
    assert_eq!(status, 400, "{body}");
    let r = server
        .client
        .get(format!("{}/v1/events/stream", server.api))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_streams_and_waits() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let mut stream = SseClient::connect(
        &server.client,
        &format!("{}/v1/events/stream", server.api),
        None,
    )
    .await;
    let client = server.client.clone();
    let url = format!("{}/v1/jobs/p/t/never?wait=60s", server.api);
    let waiter =
        tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // stop() fails the test if shutdown takes over 20s; the wait asked for 60s.
    server.stop().await;
    assert_eq!(waiter.await.unwrap(), 404);
    assert!(stream.next(Duration::from_secs(5)).await.is_none());
}

/// Two relays on one Postgres database: a waiter and a stream client on one are woken by an
/// event ingested through the other.
#[tokio::test]
async fn replicas_wake_each_other_through_postgres() {
    let Ok(url) = std::env::var(common::POSTGRES_ENV) else {
        return;
    };
    let db = TestDb::postgres(&url).await;
    let a = TestServer::start(&db, &[]).await;
    let b = TestServer::start(&db, &[]).await;
    let mut stream =
        SseClient::connect(&a.client, &format!("{}/v1/events/stream", a.api), None).await;
    let client = a.client.clone();
    let wait_url = format!("{}/v1/jobs/p/t/j1?wait=20s", a.api);
    let waiter = tokio::spawn(async move {
        client
            .get(wait_url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.post(
            job_event("e1", "j1", "Finished").to_string(),
            "application/json"
        )
        .await
        .status(),
        200
    );
    let body = tokio::time::timeout(LONG, waiter).await.unwrap().unwrap();
    assert_eq!(body["state"], "Finished");
    let e = stream.next(LONG).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&e.data).unwrap()["id"], "e1");
    a.stop().await;
    b.stop().await;
}
