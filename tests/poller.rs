//! Polling against mkio-sim: watches from the API and from discovery, the job safety net and
//! reconciliation of lost webhooks, all flowing into the same log as webhooks. Both backends.

mod common;

use common::{each_backend, TestDb, TestServer, SECRET};
use mkio_relay::sim::{self, SimConfig, SimHandle};
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "sim-token";

async fn start_sim() -> SimHandle {
    let config = SimConfig {
        projects: vec!["p".into()],
        token: Some(TOKEN.into()),
        job_queued_for: Duration::from_millis(300),
        // Long enough that the test drops JobFinished before MK.IO would send it.
        job_processing_for: Duration::from_millis(3000),
        live_transition: Duration::from_millis(400),
        webhook_retry_schedule: vec![Duration::from_millis(100)],
        ..SimConfig::default()
    };
    sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator")
}

/// A relay polling `sim` for project `p`, with short intervals; `extra` overrides.
async fn relay(db: &TestDb, sim: &SimHandle, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![
        ("MKIO_RELAY_MKIO_BASE_URL", sim.base_url.as_str()),
        ("MKIO_RELAY_MKIO_TOKEN", TOKEN),
        ("MKIO_RELAY_MKIO_PROJECTS", "p"),
        ("MKIO_RELAY_POLL_KINDS", ""),
        ("MKIO_RELAY_POLL_FAST_INTERVAL", "200ms"),
        ("MKIO_RELAY_POLL_SLOW_INTERVAL", "1s"),
        ("MKIO_RELAY_POLL_RECONCILE_INTERVAL", "1h"),
        ("MKIO_RELAY_POLL_JOB_SAFETY_NET_AGE", "1h"),
        ("MKIO_RELAY_POLL_LEASE_TTL", "3s"),
    ];
    vars.extend_from_slice(extra);
    TestServer::start(db, &vars).await
}

/// Calls the simulator's MK.IO API.
async fn mkio(sim: &SimHandle, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.base_url))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.expect("simulator request").status().as_u16()
}

async fn sim_control(sim: &SimHandle, path: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/{path}", sim.base_url))
        .json(&body)
        .send()
        .await
        .expect("control request");
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// Registers the relay as the project's webhook target, as `rules apply` would.
async fn register_rule(sim: &SimHandle, relay: &TestServer) {
    let spec = json!({"spec": {
        "url": format!("{}/webhooks/mkio", relay.ingest),
        "enabled": true,
        "events": ["MediaKind.JobStarted", "MediaKind.JobFinished"],
        "authentication": {"headers": {"Authorization": format!("Bearer {SECRET}")}}
    }});
    let status = mkio(
        sim,
        reqwest::Method::PUT,
        "/api/v1/projects/p/webhook/rules/mkio-relay",
        Some(spec),
    )
    .await;
    assert_eq!(status, 201);
}

async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job_path(name: &str) -> String {
    format!("/api/v1/projects/p/media/transforms/t/jobs/{name}")
}

async fn job_state(relay: &TestServer, name: &str) -> Option<String> {
    let (status, body) = relay.get(&format!("/v1/jobs/p/t/{name}")).await;
    (status == 200).then(|| body["state"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn an_api_watch_follows_a_streaming_endpoint_until_running() {
    each_backend(|db| async move {
        let sim = start_sim().await;
        sim_control(
            &sim,
            "seed",
            json!({"project": "p", "streaming_endpoints": ["se1"]}),
        )
        .await;
        // Stable states poll slowly (an hour here); a watch that names its `until` state keeps
        // looking soon after, so the start below is seen within seconds.
        let relay = relay(&db, &sim, &[("MKIO_RELAY_POLL_SLOW_INTERVAL", "1h")]).await;
        let path = "/api/v1/projects/p/media/streamingEndpoints/se1";

        // Bad input: not a resource path, an unmanaged project, a bad until.
        for (body, code) in [
            (json!({"path": "/nowhere"}), "invalid_watch"),
            (
                json!({"path": "/api/v1/projects/q/media/streamingEndpoints/x"}),
                "invalid_watch",
            ),
            (json!({"path": path, "until": []}), "invalid_watch"),
            (json!({"path": path, "extra": 1}), "invalid_body"),
        ] {
            let r = relay
                .client
                .post(format!("{}/v1/watches", relay.api))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{body}");
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["error"]["code"], code, "{b}");
        }

        let r = relay
            .client
            .post(format!("{}/v1/watches", relay.api))
            .json(&json!({"path": path, "until": "Running"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let watch: Value = r.json().await.unwrap();
        let id = watch["id"].as_str().unwrap().to_owned();
        assert_eq!(watch["kind"], "streaming_endpoint");

        // Polls follow it from Creating to Stopped (the simulator creates it that way).
        let (status, body) = relay
            .get("/v1/resources/streaming_endpoint/p/se1?wait=10s&until=Stopped")
            .await;
        assert_eq!(status, 200, "{body}");
        let started = mkio(&sim, reqwest::Method::POST, &format!("{path}/start"), None).await;
        assert!((200..300).contains(&started), "{started}");
        let (status, body) = relay
            .get("/v1/resources/streaming_endpoint/p/se1?wait=15s&until=Running")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["condition_met"], true, "{body}");

        until("watch done", Duration::from_secs(10), || async {
            relay.get(&format!("/v1/watches/{id}")).await.1["status"] == "done"
        })
        .await;
        let events = relay.all_events().await;
        let states: Vec<&str> = events.iter().filter_map(|e| e["state"].as_str()).collect();
        assert!(states.contains(&"Stopped"), "{events:?}");
        assert_eq!(states.last(), Some(&"Running"), "{events:?}");
        assert!(events
            .iter()
            .all(|e| e["origin"] == "poll" && e["type"] == "MkioRelay.StatePolled"));
        let (_, list) = relay.get("/v1/watches?status=done").await;
        assert_eq!(list["watches"].as_array().unwrap().len(), 1);
        let r = relay
            .client
            .delete(format!("{}/v1/watches/{id}", relay.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let (status, _) = relay.get(&format!("/v1/watches/{id}")).await;
        assert_eq!(status, 404);
        relay.stop().await;
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn discovery_watches_configured_kinds_and_records_their_state() {
    each_backend(|db| async move {
        let sim = start_sim().await;
        sim_control(
            &sim,
            "seed",
            json!({"project": "p", "streaming_endpoints": ["se1", "se2"], "media_live_events": ["le1"],
                   "live_outputs": [{"live_event": "le1", "name": "o1"}]}),
        )
        .await;
        let relay = relay(
            &db,
            &sim,
            &[("MKIO_RELAY_POLL_KINDS", "streaming_endpoint,media_live_event,live_output")],
        )
        .await;
        until("four watches", Duration::from_secs(10), || async {
            relay.get("/v1/watches").await.1["watches"].as_array().map_or(0, Vec::len) == 4
        })
        .await;
        until("four resources", Duration::from_secs(10), || async {
            relay.get("/v1/resources").await.1["resources"].as_array().map_or(0, Vec::len) == 4
        })
        .await;
        // A change on an uncovered resource is seen within its interval (1 s here).
        sim.set_state("/api/v1/projects/p/media/streamingEndpoints/se2", "Running");
        let (status, body) = relay
            .get("/v1/resources/streaming_endpoint/p/se2?wait=10s&until=Running")
            .await;
        assert_eq!(status, 200, "{body}");
        relay.stop().await;
        sim.shutdown().await;
    })
    .await;
}

/// A JobFinished webhook that MK.IO gave up on is recovered, by the safety net (a job
/// non-terminal for too long) or by reading the rule's delivery history.
#[tokio::test]
async fn a_lost_job_finished_webhook_is_recovered() {
    for (name, extra) in [
        (
            "safety-net",
            [
                ("MKIO_RELAY_POLL_JOB_SAFETY_NET_AGE", "1s"),
                ("MKIO_RELAY_POLL_RECONCILE_INTERVAL", "1h"),
            ],
        ),
        (
            "reconcile",
            [
                ("MKIO_RELAY_POLL_JOB_SAFETY_NET_AGE", "1h"),
                ("MKIO_RELAY_POLL_RECONCILE_INTERVAL", "300ms"),
            ],
        ),
    ] {
        each_backend(|db| async move {
            let sim = start_sim().await;
            let relay = relay(&db, &sim, &extra).await;
            register_rule(&sim, &relay).await;
            let job = format!("job-{name}");
            let created = mkio(
                &sim,
                reqwest::Method::PUT,
                &job_path(&job),
                Some(json!({"properties": {"input": {"@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": "in"},
                    "outputs": [{"@odata.type": "#Microsoft.Media.JobOutputAsset", "assetName": "out"}]}})),
            )
            .await;
            assert!((200..300).contains(&created), "{created}");
            // JobStarted arrives by webhook; then MK.IO loses JobFinished.
            until("JobStarted delivered", Duration::from_secs(10), || async {
                job_state(&relay, &job).await.as_deref() == Some("Processing")
            })
            .await;
            sim.drop_webhooks(1);
            until("Finished recovered", Duration::from_secs(20), || async {
                job_state(&relay, &job).await.as_deref() == Some("Finished")
            })
            .await;
            let events = relay.all_events().await;
            let finished: Vec<&Value> = events.iter().filter(|e| e["state"] == "Finished").collect();
            assert_eq!(finished.len(), 1, "{name}: {events:?}");
            assert_eq!(finished[0]["origin"], "poll", "{name}");
            assert_eq!(sim.stats().webhooks.dropped, 1);
            relay.stop().await;
            sim.shutdown().await;
        })
        .await;
    }
}

/// Shutdown never waits for MK.IO: a poll stuck behind a paused budget (here MK.IO asked for
/// ten minutes with Retry-After) is dropped, and the relay stops at once.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_paused_budget() {
    let db = TestDb::sqlite();
    let sim = sim::start(
        SimConfig {
            projects: vec!["p".into()],
            token: Some(TOKEN.into()),
            get_limit_per_minute: 1,
            retry_after: Some(Duration::from_secs(600)),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    sim_control(
        &sim,
        "seed",
        json!({"project": "p", "streaming_endpoints": ["a", "b"]}),
    )
    .await;
    let relay = relay(
        &db,
        &sim,
        &[("MKIO_RELAY_POLL_KINDS", "streaming_endpoint")],
    )
    .await;
    until(
        "MK.IO throttles the relay",
        Duration::from_secs(10),
        || async {
            sim.stats()
                .scopes
                .get("p")
                .is_some_and(|s| s.get.rate_limited >= 1)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    relay.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}
