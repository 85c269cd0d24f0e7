//! API tests: the real server on port 0, fixtures posted over HTTP, on SQLite and (when
//! configured) Postgres.

mod common;

use common::{each_backend, fixture, fixture_json, TestServer, SECRET};
use serde_json::{json, Value};

const VALID: [&str; 11] = [
    "job-started.json",
    "job-finished.json",
    "job-finished-media-path.json",
    "job-errored.json",
    "job-canceled.json",
    "batch-two-events.json",
    "streaming-locator-created.json",
    "unknown-type.json",
    "channel-instance-error.json",
    "channel-instance-started.json",
    "channel-instance-stopped.json",
];
const OPERATION: &str = "scheduled-operation-completed.json";

async fn assert_final_states(server: &TestServer) {
    for (job, state) in [
        ("job-0001", "Finished"),
        ("job-0002", "Error"),
        ("job-0003", "Canceled"),
    ] {
        let (status, body) = server
            .get(&format!("/v1/jobs/studio-prod/h264-ladder/{job}"))
            .await;
        assert_eq!(status, 200, "{job}: {body}");
        assert_eq!(body["state"], state, "{job}: {body}");
    }
    let (_, loc) = server
        .get("/v1/resources/streaming_locator/studio-prod/loc-job-0001-ladder")
        .await;
    assert_eq!(loc["state"], "Created", "{loc}");
    let (_, chan) = server
        .get("/v1/resources/live_channel/studio-prod/news-247")
        .await;
    assert_eq!(chan["state"], "Stopped", "{chan}");
    let (_, op) = server
        .get("/v1/resources/scheduled_operation/studio-prod/daily-window-2025-03-14")
        .await;
    assert_eq!(op["state"], "Completed", "{op}");
    assert_eq!(op["parent"], "news-247");
    assert_eq!(
        op["details"]["correlation_data"]["rundown"],
        "news-247-daily"
    );
}

#[tokio::test]
async fn fixtures_in_any_order_reach_the_documented_states() {
    let mut forward: Vec<&str> = VALID.to_vec();
    forward.push(OPERATION);
    let backward: Vec<&str> = forward.iter().rev().copied().collect();
    for order in [forward, backward] {
        each_backend(|db| {
            let order = order.clone();
            async move {
                let server = TestServer::start(&db, &[]).await;
                for name in &order {
                    let r = server.post_fixture(name).await;
                    assert_eq!(r.status(), 200, "{name}: {}", r.text().await.unwrap());
                }
                assert_final_states(&server).await;
                // 12 files, one a batch of two: 13 events.
                assert_eq!(server.all_events().await.len(), 13);
                server.stop().await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn job_row_exposes_outputs_errors_and_correlation() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        for name in ["job-finished.json", "job-errored.json", "job-canceled.json"] {
            assert_eq!(server.post_fixture(name).await.status(), 200);
        }
        let (_, j1) = server
            .get("/v1/jobs/studio-prod/h264-ladder/job-0001")
            .await;
        assert_eq!(j1["correlation_data"]["orderId"], "ORD-20250314-0117");
        assert_eq!(j1["outputs"].as_array().unwrap().len(), 2);
        assert_eq!(j1["outputs"][0]["label"], "ladder");
        assert_eq!(j1["outputs"][0]["asset_name"], "job-0001-ladder");
        assert_eq!(j1["outputs"][0]["progress"], 100);
        assert_eq!(j1["error"], Value::Null);
        assert!(j1["last_seq"].as_i64().unwrap() > 0);
        let (_, j2) = server
            .get("/v1/jobs/studio-prod/h264-ladder/job-0002")
            .await;
        let err = &j2["outputs"][0]["error"];
        assert_eq!(err["category"], "Content");
        assert_eq!(err["code"], "ContentMalformed");
        assert_eq!(err["retry"], "DoNotRetry");
        assert!(err["message"].is_string());
        assert_eq!(j2["error"]["code"], "ContentMalformed");
        let (_, j3) = server
            .get("/v1/jobs/studio-prod/h264-ladder/job-0003")
            .await;
        assert_eq!(j3["outputs"][0]["state"], "Canceled");
        assert_eq!(j3["outputs"][1]["state"], "Finished");

        let (_, list) = server.get("/v1/jobs?project=studio-prod&state=Error").await;
        let jobs = list["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0]["job"], "job-0002");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn duplicates_store_once_under_both_content_types() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let body = fixture("job-finished.json");
        let first = server.post(body.clone(), "application/json").await;
        assert_eq!(first.status(), 200);
        let first: Value = first.json().await.unwrap();
        assert_eq!(first["accepted"], 1);
        let again = server.post(body, "application/cloudevents+json").await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["accepted"], 0);
        assert_eq!(again["duplicates"], 1);
        assert_eq!(again["events"][0]["duplicate"], true);

        let batch = fixture("batch-two-events.json");
        for ct in ["application/json", "application/cloudevents-batch+json"] {
            assert_eq!(server.post(batch.clone(), ct).await.status(), 200);
        }
        let events = server.all_events().await;
        assert_eq!(events.len(), 3, "one JobFinished and two JobStarted");
        // The same transition with a different id and the absolute /media/ source: a second
        // history row, still one job row.
        assert_eq!(
            server
                .post_fixture("job-finished-media-path.json")
                .await
                .status(),
            200
        );
        assert_eq!(server.all_events().await.len(), 4);
        let (_, jobs) = server.get("/v1/jobs?transform=h264-ladder").await;
        let names: Vec<&str> = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["job-0001", "job-0002", "job-0003"]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn job_started_after_finished_stays_finished_in_history() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        assert_eq!(server.post_fixture("job-finished.json").await.status(), 200);
        assert_eq!(server.post_fixture("job-started.json").await.status(), 200);
        let (_, job) = server
            .get("/v1/jobs/studio-prod/h264-ladder/job-0001")
            .await;
        assert_eq!(job["state"], "Finished");
        let events = server.all_events().await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["type"], "MediaKind.JobStarted");
        assert_eq!(events[1]["applied"], false);
        assert_eq!(
            events[1]["resource"],
            json!({"project": "studio-prod", "transform": "h264-ladder", "job": "job-0001"})
        );
        // The channel pair: the older Started after Stopped does not overwrite it.
        for name in [
            "channel-instance-stopped.json",
            "channel-instance-started.json",
        ] {
            assert_eq!(server.post_fixture(name).await.status(), 200);
        }
        let (_, chan) = server
            .get("/v1/resources/live_channel/studio-prod/news-247")
            .await;
        assert_eq!(chan["state"], "Stopped");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn events_api_pages_and_filters() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        for name in VALID {
            assert_eq!(server.post_fixture(name).await.status(), 200);
        }
        let (_, page) = server.get("/v1/events?limit=5").await;
        let seqs: Vec<i64> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs.len(), 5);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(page["next_after"], seqs[4]);
        let (_, rest) = server
            .get(&format!("/v1/events?after={}&limit=1000", seqs[4]))
            .await;
        assert_eq!(rest["events"].as_array().unwrap().len(), 12 - 5);

        let (_, unknown) = server.get("/v1/events?kind=unknown").await;
        let unknown = unknown["events"].as_array().unwrap();
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0]["type"], "MediaKind.SomethingNew");
        assert_eq!(unknown[0]["resource"]["kind"], "asset");
        // An unknown type never creates or changes state.
        let (status, _) = server
            .get("/v1/resources/asset/studio-prod/job-0001-ladder")
            .await;
        assert_eq!(status, 404);

        let (_, finished) = server.get("/v1/events?type=MediaKind.JobFinished").await;
        assert_eq!(finished["events"].as_array().unwrap().len(), 4);
        let (_, live) = server
            .get("/v1/events?kind=live_channel&project=studio-prod")
            .await;
        assert_eq!(live["events"].as_array().unwrap().len(), 3);
        let (_, none) = server.get("/v1/events?project=elsewhere").await;
        assert_eq!(none["events"], json!([]));
        assert_eq!(none["next_after"], 0);

        let e = &finished["events"][0];
        for field in [
            "seq",
            "id",
            "type",
            "source",
            "time",
            "received_at",
            "project",
            "kind",
            "resource",
            "previous_state",
            "state",
            "data",
        ] {
            assert!(e.get(field).is_some(), "event lacks {field}: {e}");
        }
        assert_eq!(
            e["source"],
            "/api/v1/projects/studio-prod/media/transforms/h264-ladder/jobs/job-0001"
        );
        assert_eq!(e["data"], fixture_json("job-finished.json")["data"]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn resource_listing_pages_with_a_cursor() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        for name in VALID {
            assert_eq!(server.post_fixture(name).await.status(), 200);
        }
        let mut seen = Vec::new();
        let mut path = "/v1/resources?limit=2".to_owned();
        loop {
            let (status, page) = server.get(&path).await;
            assert_eq!(status, 200, "{page}");
            for r in page["resources"].as_array().unwrap() {
                seen.push(format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap(),
                    r["name"].as_str().or(r["job"].as_str()).unwrap()
                ));
            }
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/resources?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "job/job-0001",
                "job/job-0002",
                "job/job-0003",
                "live_channel/news-247",
                "streaming_locator/loc-job-0001-ladder"
            ]
        );
        let (_, chans) = server
            .get("/v1/resources?kind=live_channel&state=Stopped")
            .await;
        assert_eq!(chans["resources"].as_array().unwrap().len(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn data_survives_a_restart() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        assert_eq!(server.post_fixture("job-finished.json").await.status(), 200);
        server.stop().await;
        let server = TestServer::start(&db, &[]).await;
        let (_, job) = server
            .get("/v1/jobs/studio-prod/h264-ladder/job-0001")
            .await;
        assert_eq!(job["state"], "Finished");
        // The duplicate window survives too, and sequence numbers keep increasing.
        let again: Value = server
            .post_fixture("job-finished.json")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again["duplicates"], 1);
        let next: Value = server
            .post_fixture("job-errored.json")
            .await
            .json()
            .await
            .unwrap();
        // Gaps are allowed (a refused duplicate may consume a number); going back is not.
        assert!(next["events"][0]["seq"].as_i64().unwrap() > 1, "{next}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_bodies_get_4xx_json_and_store_nothing() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let cases: [(&str, &str, u16); 8] = [
            ("malformed/not-json.txt", "application/json", 400),
            (
                "malformed/not-json.txt",
                "application/x-www-form-urlencoded",
                415,
            ),
            ("malformed/missing-id.json", "application/json", 400),
            (
                "malformed/wrong-specversion.json",
                "application/cloudevents+json",
                400,
            ),
            ("malformed/data-not-object.json", "application/json", 400),
            ("malformed/deeply-nested.json", "application/json", 400),
            ("malformed/empty.json", "application/json", 400),
            ("job-finished.json", "text/plain", 415),
        ];
        for (name, ct, want) in cases {
            let r = server.post(fixture(name), ct).await;
            assert_eq!(r.status().as_u16(), want, "{name} as {ct}");
            let body: Value = r.json().await.expect("JSON error body");
            assert!(body["error"]["code"].is_string(), "{name}: {body}");
            assert!(body["error"]["message"].is_string(), "{name}: {body}");
        }
        let r = server
            .post(fixture("malformed/missing-id.json"), "application/json")
            .await;
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_cloudevent");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("`id`"),
            "{body}"
        );

        // A batch with one invalid element is rejected whole.
        let mut batch = fixture_json("batch-two-events.json");
        batch[1].as_object_mut().unwrap().remove("source");
        let r = server
            .post(batch.to_string(), "application/cloudevents-batch+json")
            .await;
        assert_eq!(r.status(), 400);

        assert!(server.all_events().await.is_empty(), "nothing stored");
        // Still serving.
        assert_eq!(server.post_fixture("job-finished.json").await.status(), 200);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn credentials_are_checked_before_anything_is_stored() {
    let db = common::TestDb::sqlite();
    let server = TestServer::start(
        &db,
        &[
            ("MKIO_RELAY_WEBHOOK_SECRETS", "old-secret,new-secret"),
            ("MKIO_RELAY_WEBHOOK_QUERY_PARAM", "access_token"),
        ],
    )
    .await;
    let url = format!("{}/webhooks/mkio", server.ingest);
    let body = fixture("job-finished.json");
    let send = |req: reqwest::RequestBuilder| {
        let body = body.clone();
        async move {
            req.header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    for (what, req) in [
        ("no credentials", server.client.post(&url)),
        ("wrong bearer", server.client.post(&url).bearer_auth("nope")),
        (
            "wrong header",
            server.client.post(&url).header("x-webhook-secret", "nope"),
        ),
        (
            "test secret no longer valid",
            server.client.post(&url).bearer_auth(SECRET),
        ),
        (
            "wrong query",
            server.client.post(format!("{url}?access_token=nope")),
        ),
    ] {
        let r = send(req).await;
        assert_eq!(r.status(), 401, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
    assert!(server.all_events().await.is_empty());
    for (what, req) in [
        (
            "old bearer",
            server.client.post(&url).bearer_auth("old-secret"),
        ),
        (
            "new header",
            server
                .client
                .post(&url)
                .header("x-webhook-secret", "new-secret"),
        ),
        (
            "query",
            server
                .client
                .post(format!("{url}/rule-a?access_token=new-secret")),
        ),
    ] {
        assert_eq!(send(req).await.status(), 200, "{what}");
    }
    server.stop().await;
}

#[tokio::test]
async fn query_parameter_secret_only_when_configured() {
    let db = common::TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let r = server
        .client
        .post(format!(
            "{}/webhooks/mkio?access_token={SECRET}",
            server.ingest
        ))
        .header("content-type", "application/json")
        .body(fixture("job-finished.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let db = common::TestDb::sqlite();
    let server = TestServer::start(&db, &[("MKIO_RELAY_INGEST_BODY_LIMIT", "2000")]).await;
    let small = server.post_fixture("job-started.json").await; // 2,402 bytes
    assert_eq!(small.status(), 413);
    let body: Value = small.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 1500]), Ok(vec![b' '; 1500])];
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = server.post(stream, "application/json").await;
    assert_eq!(r.status(), 413);
    assert!(server.all_events().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn binary_mode_and_handshake() {
    let db = common::TestDb::sqlite();
    let server = TestServer::start(&db, &[]).await;
    let data = fixture_json("job-finished.json")["data"].to_string();
    let r = server
        .client
        .post(format!("{}/webhooks/mkio", server.ingest))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "binary-1")
        .header("ce-type", "MediaKind.JobFinished")
        .header(
            "ce-source",
            "/api/v1/projects/studio-prod/transforms/h264-ladder/jobs/job-0001",
        )
        .header("ce-time", "2025-03-14T09:09:47Z")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, job) = server
        .get("/v1/jobs/studio-prod/h264-ladder/job-0001")
        .await;
    assert_eq!(job["state"], "Finished");

    let r = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/webhooks/mkio", server.ingest),
        )
        .header("webhook-request-origin", "eventemitter.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["webhook-allowed-origin"],
        "eventemitter.example.com"
    );
    assert_eq!(r.headers()["webhook-allowed-rate"], "*");
    let r = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/webhooks/mkio", server.ingest),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn standard_webhooks_signature_required() {
    use mkio_relay::ingest::signature::{decode_secret, sign};
    let key = "whsec_2kb0AXog+QaEdUVWjaRwnHPHpCiaq1H8/lOE786ZROA=";
    let db = common::TestDb::sqlite();
    let server = TestServer::start(
        &db,
        &[
            ("MKIO_RELAY_WEBHOOK_SIGNATURE_MODE", "required"),
            ("MKIO_RELAY_WEBHOOK_SIGNATURE_SECRETS", key),
        ],
    )
    .await;
    let body = fixture("job-finished.json");
    let now = chrono::Utc::now().timestamp();
    let good = sign(&decode_secret(key).unwrap(), "msg-1", now, &body);
    let post = |sig: String, ts: i64| {
        let body = body.clone();
        let client = server.client.clone();
        let url = format!("{}/webhooks/mkio", server.ingest);
        async move {
            client
                .post(url)
                .bearer_auth(SECRET)
                .header("content-type", "application/json")
                .header("webhook-id", "msg-1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post("v1,".into(), now).await, 401);
    assert_eq!(post(good.clone(), now - 600).await, 401);
    assert!(server.all_events().await.is_empty());
    assert_eq!(post(good, now).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn api_token_and_json_errors() {
    let db = common::TestDb::sqlite();
    let server = TestServer::start(&db, &[("MKIO_RELAY_API_TOKEN", "api-token")]).await;
    let (status, body) = server.get("/v1/events").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let authed = |path: &str| {
        let req = server
            .client
            .get(format!("{}{path}", server.api))
            .bearer_auth("api-token");
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(authed("/v1/events").await.0, 200);
    // Health stays open for probes.
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    for (path, status, code) in [
        ("/v1/jobs/p/t/nope", 404, "not_found"),
        ("/v1/resources/live_channel/p/nope", 404, "not_found"),
        ("/v1/resources/gadget/p/x", 400, "invalid_kind"),
        ("/v1/events?after=abc", 400, "invalid_query"),
        ("/v1/events?limit=0", 400, "invalid_query"),
        ("/v1/events?limit=100000", 400, "invalid_query"),
        ("/v1/events?kind=gadget", 400, "invalid_kind"),
        ("/v1/events?typo=1", 400, "invalid_query"),
        ("/v1/jobs?cursor=garbage", 400, "invalid_query"),
        ("/v1/nothing", 404, "not_found"),
    ] {
        let (got, body) = authed(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    // The ingest port does not serve the API.
    let r = server
        .client
        .get(format!("{}/v1/events", server.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_deliveries_all_commit_with_unique_sequence_numbers() {
    each_backend(|db| async move {
        let server = TestServer::start(&db, &[]).await;
        let template = fixture_json("job-finished.json");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let mut event = template.clone();
            event["id"] = json!(format!("concurrent-{i}"));
            event["source"] = json!(format!("/api/v1/projects/p/transforms/t/jobs/job-{i}"));
            let client = server.client.clone();
            let url = format!("{}/webhooks/mkio", server.ingest);
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(SECRET)
                    .header("content-type", "application/json")
                    .body(event.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()["events"][0]["seq"]
                    .as_i64()
                    .unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 200);
        assert_eq!(server.all_events().await.len(), 200);
        let (_, jobs) = server.get("/v1/jobs?project=p&limit=1000").await;
        assert_eq!(jobs["jobs"].as_array().unwrap().len(), 200);
        server.stop().await;
    })
    .await;
}

use mkio_relay::store::outbox::{AttemptResult, Claimed, DeliveryRow, ReplayRange, Subscription};
use mkio_relay::store::watches::{OnExisting, PollRecord, WatchQuery, WatchRow};
use mkio_relay::store::StoreError;
use std::sync::Arc;

fn fail() -> StoreError {
    StoreError::Database(sqlx::Error::PoolTimedOut)
}

/// A store whose every write fails, to prove a storage failure is a 503, never a 2xx.
struct FailingStore;

#[async_trait::async_trait]
impl mkio_relay::store::Store for FailingStore {
    async fn append(
        &self,
        _: &[mkio_relay::domain::event::NewEvent],
    ) -> Result<Vec<mkio_relay::store::Appended>, mkio_relay::store::StoreError> {
        Err(mkio_relay::store::StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ))
    }
    async fn events(
        &self,
        _: &mkio_relay::store::EventQuery,
    ) -> Result<Vec<mkio_relay::store::StoredEvent>, mkio_relay::store::StoreError> {
        Err(mkio_relay::store::StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ))
    }
    async fn resources(
        &self,
        _: &mkio_relay::store::ResourceQuery,
    ) -> Result<Vec<mkio_relay::store::ResourceRow>, mkio_relay::store::StoreError> {
        Err(mkio_relay::store::StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ))
    }
    async fn last_seq(&self) -> Result<i64, mkio_relay::store::StoreError> {
        Ok(0)
    }
    async fn ping(&self) -> Result<(), mkio_relay::store::StoreError> {
        Err(mkio_relay::store::StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ))
    }
    async fn migrate(&self) -> Result<(), mkio_relay::store::StoreError> {
        Ok(())
    }
    async fn put_subscription(&self, _: &Subscription) -> Result<(), StoreError> {
        Err(fail())
    }
    async fn subscriptions(&self, _: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        Err(fail())
    }
    async fn delete_subscription(&self, _: &str) -> Result<bool, StoreError> {
        Err(fail())
    }
    async fn claim_deliveries(&self, _: i64, _: i64, _: i64) -> Result<Vec<Claimed>, StoreError> {
        Err(fail())
    }
    async fn next_delivery_due(&self, _: i64) -> Result<Option<i64>, StoreError> {
        Err(fail())
    }
    async fn finish_deliveries(
        &self,
        _: &[AttemptResult],
        _: i64,
    ) -> Result<Vec<bool>, StoreError> {
        Err(fail())
    }
    async fn deliveries(
        &self,
        _: &str,
        _: Option<&str>,
        _: i64,
        _: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        Err(fail())
    }
    async fn retry_delivery(&self, _: i64, _: i64) -> Result<bool, StoreError> {
        Err(fail())
    }
    async fn replay(&self, _: &Subscription, _: &ReplayRange, _: i64) -> Result<u64, StoreError> {
        Err(fail())
    }
    async fn delivery_event(
        &self,
        _: i64,
    ) -> Result<Option<(mkio_relay::store::StoredEvent, Option<Vec<u8>>)>, StoreError> {
        Err(fail())
    }
    async fn add_watch(&self, _: &WatchRow, _: OnExisting) -> Result<WatchRow, StoreError> {
        Err(fail())
    }
    async fn watches(&self, _: &WatchQuery) -> Result<Vec<WatchRow>, StoreError> {
        Err(fail())
    }
    async fn due_watches(&self, _: &str, _: i64, _: i64) -> Result<Vec<WatchRow>, StoreError> {
        Err(fail())
    }
    async fn next_watch_due(&self, _: &str) -> Result<Option<i64>, StoreError> {
        Err(fail())
    }
    async fn record_poll(&self, _: &str, _: &PollRecord) -> Result<(), StoreError> {
        Err(fail())
    }
    async fn delete_watch(&self, _: &str) -> Result<bool, StoreError> {
        Err(fail())
    }
    async fn take_lease(&self, _: &str, _: &str, _: i64, _: i64) -> Result<bool, StoreError> {
        Err(fail())
    }
    async fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(fail())
    }
    async fn stale_jobs(
        &self,
        _: &str,
        _: i64,
        _: i64,
    ) -> Result<Vec<mkio_relay::store::ResourceRow>, StoreError> {
        Err(fail())
    }
    async fn prune(
        &self,
        _: mkio_relay::store::retention::Prune,
        _: i64,
        _: i64,
        _: i64,
    ) -> Result<mkio_relay::store::retention::PruneStep, StoreError> {
        Err(fail())
    }
    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn listen_commits(
        &self,
        _: Arc<tokio::sync::Notify>,
        _: tokio_util::sync::CancellationToken,
    ) -> Result<(), mkio_relay::store::StoreError> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "failing"
    }
}

#[tokio::test]
async fn storage_failure_answers_503_with_retry_after() {
    use mkio_relay::http::health::Health;
    use mkio_relay::http::ingest::{router, IngestState};
    use mkio_relay::ingest::writer::Writer;

    let config =
        mkio_relay::config::Config::load_with_env(None, &[("MKIO_RELAY_WEBHOOK_SECRETS", SECRET)])
            .unwrap();
    let store: Arc<dyn mkio_relay::store::Store> = Arc::new(FailingStore);
    let (writer, handle) = Writer::new(store.clone(), 16, 100, 0);
    tokio::spawn(writer.run());
    let health = Health {
        store,
        writer: handle.clone(),
    };
    let app = router(Arc::new(IngestState::from_config(&config, handle)), health);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/webhooks/mkio"))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body(fixture("job-finished.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable");
    let r = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
}
