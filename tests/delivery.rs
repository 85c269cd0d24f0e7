//! Outbound webhooks against a real receiver: signatures, order per resource, retries,
//! Retry-After, 410, timeouts, redirects, dead letters, restarts, replay, rotation.

mod common;

use common::{each_backend, job_event, Receiver, Reply, TestDb, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// The subscription's first delivery, once it is recorded as delivered.
async fn delivered(server: &TestServer, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let (_, list) = server
            .send(
                Method::GET,
                &format!("/v1/subscriptions/{id}/deliveries"),
                None,
            )
            .await;
        let d = list["deliveries"][0].clone();
        if d["state"] == "delivered" {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(server: &TestServer, id: &str, job: &str, state: &str) {
    let r = server
        .post(job_event(id, job, state).to_string(), "application/json")
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn deliveries_are_signed_documented_and_ordered_per_resource() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[("MKIO_RELAY_DELIVERY_CONCURRENCY", "4")]).await;
        let receiver = Receiver::start(vec![]).await;
        let (_, secret) = server
            .subscribe(json!({"url": receiver.url, "filter": {"types": ["MediaKind.JobStarted", "MediaKind.JobFinished"]}}))
            .await;
        // Interleaved events about three jobs, plus one the filter excludes.
        for round in 0..5 {
            for job in ["a", "b", "c"] {
                post(&server, &format!("{job}-{round}"), job, if round == 4 { "Finished" } else { "Processing" }).await;
            }
        }
        assert_eq!(server.post_fixture("channel-instance-stopped.json").await.status(), 200);
        let got = receiver.wait_delivered(15, LONG).await;
        assert_eq!(got.len(), 15);
        for r in &got {
            assert!(r.signed_with(&secret), "signature of {}", r.webhook_id);
            assert!((r.timestamp - chrono::Utc::now().timestamp()).abs() < 300);
            let body = r.json();
            assert!(body["type"].as_str().unwrap().starts_with("MediaKind.Job"));
            assert!(body["timestamp"].is_string());
            assert_eq!(body["data"]["event"]["seq"].as_i64().unwrap().to_string(), r.webhook_id.rsplit('_').next().unwrap());
            assert_eq!(body["data"]["cloudevent"]["specversion"], "1.0");
            assert_eq!(body["data"]["cloudevent"]["id"], body["data"]["event"]["id"]);
        }
        for job in ["a", "b", "c"] {
            let seqs: Vec<i64> = got
                .iter()
                .map(|r| r.json())
                .filter(|b| b["data"]["event"]["resource"]["job"] == job)
                .map(|b| b["data"]["event"]["seq"].as_i64().unwrap())
                .collect();
            assert_eq!(seqs.len(), 5);
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "job {job} out of order: {seqs:?}");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn failures_are_retried_with_a_stable_id_until_delivered() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let receiver = Receiver::start(vec![Reply::status(500), Reply::status(502)]).await;
        let (id, _) = server
            .subscribe(json!({"url": receiver.url, "retry_schedule": ["100ms", "100ms", "100ms"]}))
            .await;
        post(&server, "e1", "j1", "Finished").await;
        receiver.wait_delivered(1, LONG).await;
        let all = receiver.received();
        assert_eq!(all.len(), 3);
        assert!(
            all.iter().all(|r| r.webhook_id == all[0].webhook_id),
            "webhook-id is stable across retries"
        );
        // The receiver has answered; the relay records the attempt just after.
        let d = delivered(&server, &id).await;
        let d = &d;
        assert_eq!(d["attempts"], 3);
        let statuses: Vec<Value> = d["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].clone())
            .collect();
        assert_eq!(statuses, [json!(500), json!(502), json!(200)]);
        assert!(d["attempt_log"][0]["latency_ms"].is_i64());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let receiver = Receiver::start(vec![Reply {
        retry_after: Some("2"),
        ..Reply::status(429)
    }])
    .await;
    server
        .subscribe(json!({"url": receiver.url, "retry_schedule": ["50ms"]}))
        .await;
    post(&server, "e1", "j1", "Finished").await;
    receiver.wait_delivered(1, LONG).await;
    let all = receiver.received();
    assert_eq!(all.len(), 2);
    // A lower bound only: a slow machine can make it later, never earlier.
    assert!(all[1].at.duration_since(all[0].at) >= Duration::from_millis(1900));
    server.stop().await;
}

#[tokio::test]
async fn gone_disables_the_subscription_and_dead_letters_can_be_retried() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let receiver = Receiver::start(vec![Reply::status(410)]).await;
        let (gone, _) = server.subscribe(json!({"url": receiver.url})).await;
        post(&server, "e1", "j1", "Finished").await;
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let (_, sub) = server
                .send(Method::GET, &format!("/v1/subscriptions/{gone}"), None)
                .await;
            if sub["enabled"] == false {
                assert!(sub["disabled_reason"].as_str().unwrap().contains("410"));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not disabled: {sub}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Re-enabling resumes the waiting delivery.
        server
            .send(
                Method::PATCH,
                &format!("/v1/subscriptions/{gone}"),
                Some(json!({"enabled": true})),
            )
            .await;
        receiver.wait_delivered(1, LONG).await;

        // A schedule that runs out dead-letters; a manual retry delivers.
        let failing = Receiver::start(vec![Reply::status(500), Reply::status(500)]).await;
        let (dead, _) = server
            .subscribe(json!({"url": failing.url, "retry_schedule": ["50ms"]}))
            .await;
        post(&server, "e2", "j2", "Finished").await;
        let delivery = loop {
            let (_, list) = server
                .send(
                    Method::GET,
                    &format!("/v1/subscriptions/{dead}/deliveries?state=dead"),
                    None,
                )
                .await;
            if let Some(d) = list["deliveries"].as_array().unwrap().first() {
                break d.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no dead letter");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(delivery["attempts"], 2);
        let (status, _) = server
            .send(
                Method::POST,
                &format!("/v1/deliveries/{}/retry", delivery["id"]),
                None,
            )
            .await;
        assert_eq!(status, 202);
        failing.wait_delivered(1, LONG).await;
        let (status, _) = server
            .send(Method::POST, "/v1/deliveries/999999/retry", None)
            .await;
        assert_eq!(status, 404);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn timeouts_and_redirects_are_failures() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[("MKIO_RELAY_DELIVERY_ATTEMPT_TIMEOUT", "300ms")]).await;
    let receiver = Receiver::start(vec![
        Reply {
            delay: Duration::from_secs(3),
            ..Reply::status(200)
        },
        Reply {
            location: Some("http://127.0.0.1:9/elsewhere"),
            ..Reply::status(302)
        },
    ])
    .await;
    let (id, _) = server
        .subscribe(json!({"url": receiver.url, "retry_schedule": ["50ms", "50ms"]}))
        .await;
    post(&server, "e1", "j1", "Finished").await;
    receiver.wait_delivered(2, LONG).await; // the slow 200 arrives too late to count
    let d = delivered(&server, &id).await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{d}");
    assert_eq!(log[0]["status"], Value::Null);
    assert!(
        log[0]["error"].as_str().unwrap().contains("timed out"),
        "{d}"
    );
    assert_eq!(log[1]["status"], 302);
    assert_eq!(log[2]["status"], 200);
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_down_across_a_restart_gets_everything_in_order() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        // Nothing listens at first: every attempt fails to connect.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/hook");
        server.subscribe(json!({"url": url, "retry_schedule": ["200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]})).await;
        for i in 0..5 {
            post(&server, &format!("e{i}"), "j1", "Processing").await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.stop().await;
        let receiver = Receiver::start_on(&format!("127.0.0.1:{port}"), vec![]).await;
        let server = TestServer::start(&db, &[]).await;
        let got = receiver.wait_delivered(5, LONG).await;
        let ids: Vec<String> = got.iter().map(|r| r.json()["data"]["event"]["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn replay_resends_a_chosen_range() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let receiver = Receiver::start(vec![]).await;
        let (id, _) = server
            .subscribe(json!({"url": receiver.url, "filter": {"projects": ["p"]}}))
            .await;
        for i in 0..4 {
            post(&server, &format!("e{i}"), &format!("j{i}"), "Finished").await;
        }
        let first = receiver.wait_delivered(4, LONG).await;
        let second_seq = first
            .iter()
            .map(|r| r.json()["data"]["event"]["seq"].as_i64().unwrap())
            .min()
            .unwrap()
            + 1;
        let (status, body) = server
            .send(
                Method::POST,
                &format!("/v1/subscriptions/{id}/replay"),
                Some(json!({"after_seq": second_seq})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["queued"], 2);
        let all = receiver.wait_delivered(6, LONG).await;
        let replayed: Vec<&str> = all[4..].iter().map(|r| r.webhook_id.as_str()).collect();
        assert!(
            replayed
                .iter()
                .all(|w| first.iter().any(|f| f.webhook_id == *w)),
            "replays keep the event's webhook-id"
        );
        let (status, _) = server
            .send(
                Method::POST,
                &format!("/v1/subscriptions/{id}/replay"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 400);
        let (status, body) = server
            .send(
                Method::POST,
                &format!("/v1/subscriptions/{id}/replay"),
                Some(json!({"since": "2000-01-01T00:00:00Z"})),
            )
            .await;
        assert_eq!((status, body["queued"].clone()), (202, json!(4)));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_overlap() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let receiver = Receiver::start(vec![]).await;
    let (id, old) = server.subscribe(json!({"url": receiver.url})).await;
    let (status, rotated) = server
        .send(
            Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"rotate_secret": true})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_valid_until"].is_string());
    let (_, shown) = server
        .send(Method::GET, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert!(shown.get("secret").is_none(), "a secret is shown only once");
    post(&server, "e1", "j1", "Finished").await;
    let got = receiver.wait_delivered(1, LONG).await;
    assert!(got[0].signed_with(&new) && got[0].signed_with(&old));
    server.stop().await;
}

#[tokio::test]
async fn subscription_api_validates_and_protects_configured_ones() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "[[subscriptions]]\nid = \"from-config\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntypes = [\"MediaKind.JobFinished\"]\n",
    )
    .unwrap();
    let url = db.url();
    let config = mkio_relay::config::Config::load_with_env(
        Some(&file),
        &[
            ("MKIO_RELAY_DATABASE_URL", url.as_str()),
            ("MKIO_RELAY_WEBHOOK_SECRETS", common::SECRET),
        ],
    )
    .unwrap();
    let server = TestServer::start_with(config).await;
    let (_, list) = server.send(Method::GET, "/v1/subscriptions", None).await;
    assert_eq!(list["subscriptions"][0]["id"], "from-config");
    assert_eq!(list["subscriptions"][0]["origin"], "config");
    assert!(list["subscriptions"][0].get("secret").is_none());
    let (status, body) = server
        .send(Method::DELETE, "/v1/subscriptions/from-config", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("declared_in_config"))
    );
    for (body, needle) in [
        (json!({"url": "ftp://x"}), "url"),
        (
            json!({"url": "http://x/h", "filter": {"kinds": ["gadget"]}}),
            "kinds",
        ),
        (
            json!({"url": "http://x/h", "retry_schedule": ["soon"]}),
            "retry_schedule",
        ),
        (json!({"url": "http://x/h", "secret": "plain"}), "secret"),
        (json!({"url": "http://x/h", "colour": "red"}), "colour"),
        (json!({"filter": {}}), "url"),
    ] {
        let (status, err) = server
            .send(Method::POST, "/v1/subscriptions", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }
    let (status, _) = server
        .send(Method::GET, "/v1/subscriptions/sub_nope", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .send(Method::GET, "/v1/subscriptions/sub_nope/deliveries", None)
        .await;
    assert_eq!(status, 404);
    let (id, _) = server
        .subscribe(json!({"url": "http://127.0.0.1:9/h"}))
        .await;
    let (status, _) = server
        .send(Method::DELETE, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .send(Method::DELETE, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}
