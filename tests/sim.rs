//! mkio-sim, driven over HTTP in-process: job lifecycle, lists, rate limits, faults, webhook
//! rules and deliveries, forced states, the token and the /_sim control API.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use mkio_relay::sim::{self, Fault, SimConfig, SimHandle};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const P: &str = "/api/v1/projects/studio-prod";
const DEADLINE: Duration = Duration::from_secs(10);

fn fast() -> SimConfig {
    SimConfig {
        job_queued_for: Duration::from_millis(100),
        job_processing_for: Duration::from_millis(200),
        live_transition: Duration::from_millis(50),
        webhook_retry_schedule: vec![Duration::from_millis(50), Duration::from_millis(50)],
        webhook_timeout: Duration::from_secs(2),
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> SimHandle {
    sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// Polls `check` until it returns `Some`, failing with `what` after the deadline.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(sim: &SimHandle) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: sim.base_url.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn state(&self, path: &str) -> String {
        let (s, v) = self.get(&format!("{path}/state")).await;
        assert_eq!(s, 200, "{v}");
        v["status"]["state"].as_str().unwrap().to_string()
    }

    async fn wait_state(&self, path: &str, want: &str) {
        wait_for(&format!("{path} to be {want}"), || async {
            (self.state(path).await == want).then_some(())
        })
        .await
    }
}

fn assert_standard_error(v: &Value, status: u16) {
    assert_eq!(v["status"], status, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"]["detail"].is_string(), "{v}");
    assert!(v["error"]["extraDetail"].is_object(), "{v}");
    assert!(v["ref"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
}

fn job_body(description: &str) -> Value {
    json!({ "properties": {
        "description": description,
        "correlationData": { "orderId": "ORD-1" },
        "input": { "@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": "src" },
        "outputs": [ { "@odata.type": "#Microsoft.Media.JobOutputAsset", "label": "ladder" } ],
    }})
}

#[tokio::test]
async fn job_runs_queued_processing_finished_on_time_and_can_fail_or_be_canceled() {
    // Long enough that each intermediate state is still there when the next request reads it.
    let timings = SimConfig {
        job_queued_for: Duration::from_millis(300),
        job_processing_for: Duration::from_millis(300),
        live_transition: Duration::from_millis(300),
        ..fast()
    };
    let sim = start(timings).await;
    let api = Api::new(&sim);
    let job = format!("{P}/media/transforms/h264-ladder/jobs/job-0001");
    let (s, v) = api.put(&job, job_body("episode 117")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["properties"]["state"], "Queued");
    assert_eq!(
        v["properties"]["outputs"][0]["assetName"],
        "job-0001-ladder"
    );
    assert_eq!(v["supplemental"]["subscription"]["name"], "studio-prod");
    assert_eq!(api.state(&job).await, "Queued");
    api.wait_state(&job, "Finished").await;
    let (_, v) = api.get(&job).await;
    assert_eq!(v["properties"]["outputs"][0]["progress"], 100);
    assert_eq!(v["properties"]["correlationData"]["orderId"], "ORD-1");
    assert!(v["properties"]["outputs"][0].get("error").is_none());
    let seen: Vec<(String, String)> = sim
        .changes()
        .into_iter()
        .filter(|c| c.path == job)
        .map(|c| (c.from, c.to))
        .collect();
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seen,
        pairs(&[
            ("", "Queued"),
            ("Queued", "Processing"),
            ("Processing", "Finished")
        ])
    );
    let at: Vec<_> = sim
        .changes()
        .into_iter()
        .filter(|c| c.path == job)
        .map(|c| c.at)
        .collect();
    assert!(at[1].duration_since(at[0]).unwrap() >= Duration::from_millis(300));
    assert!(at[2].duration_since(at[1]).unwrap() >= Duration::from_millis(300));

    let failing = format!("{P}/media/transforms/h264-ladder/jobs/job-0002");
    assert_eq!(api.put(&failing, job_body("fail")).await.0, 201);
    api.wait_state(&failing, "Error").await;
    let (_, v) = api.get(&failing).await;
    assert_eq!(
        v["properties"]["outputs"][0]["error"]["code"],
        "ContentMalformed"
    );

    let canceled = format!("{P}/media/transforms/h264-ladder/jobs/job-0003");
    assert_eq!(api.put(&canceled, job_body("x")).await.0, 201);
    let (s, _) = api.post(&format!("{canceled}/cancelJob"), json!({})).await;
    assert_eq!(s, 202);
    assert_eq!(api.state(&canceled).await, "Canceling");
    api.wait_state(&canceled, "Canceled").await;
    sim.shutdown().await;
}

async fn collect(api: &Api, first: &str) -> (Vec<String>, Vec<String>) {
    let (mut names, mut links) = (vec![], vec![]);
    let mut next = Some(first.to_string());
    while let Some(url) = next {
        let (s, v) = api.get(&url).await;
        assert_eq!(s, 200, "{v}");
        names.extend(v["value"].as_array().unwrap().iter().map(|x| {
            x["name"]
                .as_str()
                .or(x["metadata"]["name"].as_str())
                .unwrap()
                .to_string()
        }));
        next = v["@odata.nextLink"].as_str().map(str::to_string);
        links.extend(next.clone());
    }
    (names, links)
}

#[tokio::test]
async fn lists_page_with_absolute_or_relative_links_and_filter_by_state_name_and_labels() {
    for absolute in [true, false] {
        // Jobs stay Queued for the whole test, so only the forced one is Processing.
        let config = SimConfig {
            absolute_next_links: absolute,
            job_queued_for: Duration::from_secs(60),
            ..fast()
        };
        let sim = start(config).await;
        let api = Api::new(&sim);
        let jobs: Vec<Value> = (1..=5)
            .map(|i| json!({"transform": "t", "name": format!("j{i}")}))
            .collect();
        let (s, v) = api
            .post(
                "/_sim/seed",
                json!({"project": "studio-prod", "jobs": jobs}),
            )
            .await;
        assert_eq!((s, &v["created"]), (200, &json!(5)));
        let (names, links) = collect(&api, &format!("{P}/media/transforms/t/jobs?$top=2")).await;
        assert_eq!(names, ["j1", "j2", "j3", "j4", "j5"]);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].starts_with("http://"), absolute, "{}", links[0]);
        let (_, v) = api
            .get(&format!("{P}/media/transforms/t/jobs?$top=2"))
            .await;
        assert_eq!(
            v["supplemental"]["pagination"],
            json!({"start": 0, "end": 2, "records": 2, "total": 5})
        );
        assert_eq!(v["supplemental"]["kind"], "Job");
        let (_, v) = api
            .get(&format!("{P}/media/transforms/t/jobs?$filter=name eq 'j3'"))
            .await;
        assert_eq!(v["value"].as_array().unwrap().len(), 1);
        assert!(sim.set_state(&format!("{P}/media/transforms/t/jobs/j4"), "Processing"));
        let (names, _) = collect(
            &api,
            &format!("{P}/media/transforms/t/jobs?$filter=properties/state eq 'Processing'&$top=1"),
        )
        .await;
        assert_eq!(names, ["j4"]);
        sim.shutdown().await;
    }
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    for (name, team) in [("news-247", "newsroom"), ("sport", "sports"), ("plain", "")] {
        let mut body = json!({"spec": {"state": "Stopped"}});
        if !team.is_empty() {
            body["labels"] = json!({"team": team});
        }
        assert_eq!(
            api.put(&format!("{P}/live/liveChannels/{name}"), body)
                .await
                .0,
            201
        );
    }
    let list = |q: &str| format!("{P}/live/liveChannels?{q}");
    assert_eq!(
        collect(&api, &list("$label=team=newsroom")).await.0,
        ["news-247"]
    );
    assert_eq!(
        collect(&api, &list("$label=team~s")).await.0,
        ["news-247", "sport"]
    );
    assert_eq!(
        collect(&api, &list("$label_key=team")).await.0,
        ["news-247", "sport"]
    );
    assert_eq!(
        collect(&api, &list("$filter=status/state eq 'Stopped'&$top=1"))
            .await
            .0,
        ["news-247", "plain", "sport"]
    );
    let (s, v) = api.get(&list("$filter=name gt 'a'")).await;
    assert_eq!(s, 400);
    assert_standard_error(&v, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn over_the_limit_answers_429_with_ref_and_retry_after_and_stats_keep_the_max_window() {
    let config = SimConfig {
        get_limit_per_minute: 5,
        write_limit_per_minute: 2,
        retry_after: Some(Duration::from_secs(7)),
        ..fast()
    };
    let sim = start(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}{P}/media/assets", sim.base_url);
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    }
    for _ in 0..2 {
        let res = http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "7");
        assert_standard_error(&res.json::<Value>().await.unwrap(), 429);
    }
    // Writes and other scopes have budgets of their own; /_sim has none.
    assert_eq!(
        http.put(format!("{url}/a1"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let org = format!("{}/api/v1/user/tokens", sim.base_url);
    assert_eq!(http.get(&org).send().await.unwrap().status(), 404);
    for _ in 0..3 {
        assert_eq!(
            http.get(format!("{}/_sim/stats", sim.base_url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let stats = sim.stats();
    let get = &stats.scopes["studio-prod"].get;
    assert_eq!(
        (get.total, get.rate_limited, get.max_in_any_60s_window),
        (7, 2, 7)
    );
    assert_eq!((get.by_status[&200], get.by_status[&429]), (5, 2));
    assert_eq!(stats.scopes["studio-prod"].write.by_status[&201], 1);
    assert_eq!(stats.scopes["organization"].get.by_status[&404], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_answer_the_status_after_the_delay_until_cleared_or_expired() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let assets = format!("{P}/media/assets");
    sim.set_fault(Some(Fault {
        status: Some(503),
        delay: None,
        until: None,
    }));
    let (s, v) = api.get(&assets).await;
    assert_eq!(s, 503);
    assert_standard_error(&v, 503);
    assert_eq!(
        api.get("/_sim/stats").await.0,
        200,
        "/_sim is never faulted"
    );
    sim.set_fault(Some(Fault {
        status: None,
        delay: Some(Duration::from_millis(300)),
        until: None,
    }));
    let t = Instant::now();
    assert_eq!(api.get(&assets).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.set_fault(None);
    assert_eq!(api.get(&assets).await.0, 200);
    let (s, _) = api
        .post("/_sim/fault", json!({"status": 500, "for": "200ms"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.get(&assets).await.0, 500);
    wait_for("the fault to expire", || async {
        (api.get(&assets).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(api.post("/_sim/fault", json!({"status": 500})).await.0, 200);
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/_sim/fault", None)
            .await
            .0,
        200
    );
    assert_eq!(api.get(&assets).await.0, 200);
    sim.shutdown().await;
}

fn rule(url: &str, events: &[&str]) -> Value {
    json!({ "spec": {
        "url": url, "enabled": true, "events": events,
        "headers": { "X-Source": "mkio" }, "queryParams": { "process": "123456" },
        "authentication": { "headers": { "Authorization": "Bearer s3cret" }, "queryParams": { "key": "k1" } },
    }})
}

#[tokio::test]
async fn webhook_rules_are_created_then_replaced_and_read_back_masked() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let path = format!("{P}/webhook/rules/relay");
    let (s, v) = api
        .put(
            &path,
            rule("http://127.0.0.1:1/hook", &["MediaKind.JobFinished"]),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["metadata"]["id"].clone();
    assert_eq!(
        api.put(
            &path,
            rule("http://127.0.0.1:1/hook", &["MediaKind.JobStarted"])
        )
        .await
        .0,
        200
    );
    let (s, v) = api.get(&path).await;
    assert_eq!(s, 200);
    assert_eq!(v["metadata"]["id"], id);
    assert_eq!(v["spec"]["events"], json!(["MediaKind.JobStarted"]));
    assert_eq!(
        v["spec"]["authentication"]["headers"]["Authorization"],
        "********"
    );
    assert_eq!(
        v["spec"]["authentication"]["queryParams"]["key"],
        "********"
    );
    assert_eq!(v["spec"]["headers"]["X-Source"], "mkio");
    let (_, list) = api.get(&format!("{P}/webhook/rules")).await;
    assert_eq!(list["value"][0]["metadata"]["name"], "relay");
    let (s, v) = api
        .put(
            &format!("{P}/webhook/rules/bad"),
            json!({"spec": {"url": "ftp://x", "enabled": true, "events": []}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_standard_error(&v, 400);
    assert_eq!(api.call(reqwest::Method::DELETE, &path, None).await.0, 200);
    assert_eq!(api.call(reqwest::Method::DELETE, &path, None).await.0, 204);
    assert_eq!(api.get(&path).await.0, 404);
    sim.shutdown().await;
}

/// A webhook receiver that fails the first `fail_first` requests with 500.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Uri, Value)>>>,
    calls: Arc<AtomicUsize>,
    fail_first: usize,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    uri: Uri,
    Json(body): Json<Value>,
) -> StatusCode {
    if r.calls.fetch_add(1, Ordering::SeqCst) < r.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.got.lock().unwrap().push((headers, uri, body));
    StatusCode::OK
}

async fn receiver(fail_first: usize) -> (Receiver, String) {
    let r = Receiver {
        fail_first,
        ..Receiver::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/mkio", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/webhooks/mkio", post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

async fn history(api: &Api, rule: &str) -> Vec<Value> {
    api.get(&format!("{P}/webhook/rules/{rule}/events")).await.1["value"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn deliveries_carry_the_rule_headers_and_retry_after_a_500_until_sent() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let (recv, url) = receiver(1).await;
    let events = ["MediaKind.JobStarted", "MediaKind.JobFinished"];
    assert_eq!(
        api.put(&format!("{P}/webhook/rules/relay"), rule(&url, &events))
            .await
            .0,
        201
    );
    assert_eq!(
        api.put(
            &format!("{P}/media/transforms/h264-ladder/jobs/job-0001"),
            job_body("x")
        )
        .await
        .0,
        201
    );
    let got = wait_for("two deliveries", || async {
        let g = recv.got.lock().unwrap().clone();
        (g.len() == 2).then_some(g)
    })
    .await;
    let (headers, uri, started) = &got[0];
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(headers["x-source"], "mkio");
    assert_eq!(headers["content-type"], "application/cloudevents+json");
    assert_eq!(uri.query(), Some("process=123456&key=k1"));
    assert_eq!(started["type"], "MediaKind.JobStarted");
    assert_eq!(started["specversion"], "1.0");
    assert_eq!(
        started["source"],
        "/api/v1/projects/studio-prod/transforms/h264-ladder/jobs/job-0001"
    );
    assert_eq!(started["data"]["projectName"], "studio-prod");
    assert_eq!(
        (&started["data"]["previousState"], &started["data"]["state"]),
        (&json!("Queued"), &json!("Processing"))
    );
    assert_eq!(
        started["data"]["resource"]["properties"]["state"],
        "Processing"
    );
    assert_eq!(got[1].2["type"], "MediaKind.JobFinished");
    assert_eq!(got[1].2["data"]["state"], "Finished");
    assert_ne!(started["id"], got[1].2["id"]);
    assert_eq!(
        recv.calls.load(Ordering::SeqCst),
        3,
        "one failed attempt, then two successes"
    );
    let h = wait_for("history all Sent", || async {
        let h = history(&api, "relay").await;
        h.iter().all(|e| e["status"] == "Sent").then_some(h)
    })
    .await;
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["type"], "MediaKind.JobStarted");
    let w = sim.stats().webhooks;
    assert_eq!((w.attempted, w.succeeded, w.failed), (3, 2, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_receivers_end_failed_and_dropped_webhooks_are_never_sent() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let (recv, url) = receiver(0).await;
    assert_eq!(
        api.put(
            &format!("{P}/webhook/rules/relay"),
            rule(&url, &["MediaKind.StreamingLocatorCreated"])
        )
        .await
        .0,
        201
    );
    sim.drop_webhooks(1);
    assert_eq!(
        api.put(
            &format!("{P}/media/streamingLocators/loc1"),
            json!({"properties": {"assetName": "a"}})
        )
        .await
        .0,
        201
    );
    api.wait_state(&format!("{P}/media/streamingLocators/loc1"), "Created")
        .await;
    let h = wait_for("a Failed entry", || async {
        let h = history(&api, "relay").await;
        (h.len() == 1 && h[0]["status"] == "Failed").then_some(h)
    })
    .await;
    assert_eq!(h[0]["type"], "MediaKind.StreamingLocatorCreated");
    assert_eq!(
        api.put(&format!("{P}/media/streamingLocators/loc2"), json!({}))
            .await
            .0,
        201
    );
    wait_for("the second locator's delivery", || async {
        (recv.got.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        recv.got.lock().unwrap()[0].2["source"],
        format!("{P}/media/streamingLocators/loc2")
    );
    assert_eq!(sim.stats().webhooks.dropped, 1);

    // A receiver that always fails: attempts on the schedule (1 + 2 retries), then Failed.
    let (bad, bad_url) = receiver(usize::MAX).await;
    assert_eq!(
        api.put(
            &format!("{P}/webhook/rules/relay"),
            rule(&bad_url, &["MediaKind.StreamingLocatorCreated"])
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.put(&format!("{P}/media/streamingLocators/loc3"), json!({}))
            .await
            .0,
        201
    );
    wait_for("the delivery to fail", || async {
        let h = history(&api, "relay").await;
        (h.len() == 3 && h[2]["status"] == "Failed").then_some(())
    })
    .await;
    assert_eq!(bad.calls.load(Ordering::SeqCst), 3);
    assert_eq!(sim.stats().webhooks.failed, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn set_state_and_live_channel_patches_emit_channel_events() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let (recv, url) = receiver(0).await;
    let types = [
        "MediaKind.ChannelInstanceStarted",
        "MediaKind.ChannelInstanceStopped",
        "MediaKind.ChannelInstanceError",
    ];
    assert_eq!(
        api.put(&format!("{P}/webhook/rules/relay"), rule(&url, &types))
            .await
            .0,
        201
    );
    let ch = format!("{P}/live/liveChannels/news-247");
    let (s, v) = api
        .put(
            &ch,
            json!({"metadata": {"labels": {"team": "newsroom"}}, "spec": {"state": "Stopped"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"]["state"], "Stopped");
    let bad = format!("{P}/live/liveChannels/bad");
    let (s, v) = api.put(&bad, json!({"spec": {"state": "Paused"}})).await;
    assert_eq!(s, 400);
    assert_standard_error(&v, 400);
    assert_eq!(api.get(&bad).await.0, 404, "a bad request stores nothing");
    let before = sim.changes().len();
    assert!(sim.set_state(&ch, "UnableToStart"));
    assert!(!sim.set_state(&format!("{P}/live/liveChannels/nope"), "Running"));
    let c = sim.changes()[before].clone();
    assert_eq!(
        (c.path.as_str(), c.from.as_str(), c.to.as_str()),
        (ch.as_str(), "Stopped", "UnableToStart")
    );
    let (s, v) = api
        .call(
            reqwest::Method::PATCH,
            &ch,
            Some(json!({"spec": {"state": "Running"}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spec"]["state"], "Running");
    assert_eq!(v["status"]["state"], "Starting");
    api.wait_state(&ch, "Running").await;
    api.call(
        reqwest::Method::PATCH,
        &ch,
        Some(json!({"spec": {"state": "Stopped"}})),
    )
    .await;
    api.wait_state(&ch, "Stopped").await;
    let got = wait_for("three channel events", || async {
        let g = recv.got.lock().unwrap().clone();
        (g.len() == 3).then_some(g)
    })
    .await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|(_, _, b)| {
            (
                b["type"].as_str().unwrap().to_string(),
                b["data"]["previousState"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "MediaKind.ChannelInstanceError".to_string(),
                "Stopped".to_string()
            ),
            (
                "MediaKind.ChannelInstanceStarted".to_string(),
                "Starting".to_string()
            ),
            (
                "MediaKind.ChannelInstanceStopped".to_string(),
                "Stopping".to_string()
            ),
        ]
    );
    let started = got
        .iter()
        .find(|g| g.2["type"] == "MediaKind.ChannelInstanceStarted")
        .unwrap();
    assert_eq!(started.2["source"], ch);
    assert_eq!(
        started.2["data"]["resource"]["metadata"]["labels"]["team"],
        "newsroom"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn media_live_events_outputs_and_streaming_endpoints_move_through_their_states() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let le = format!("{P}/media/liveEvents/le1");
    assert_eq!(
        api.put(&format!("{le}/liveOutputs/o1"), json!({})).await.0,
        404,
        "needs its live event"
    );
    assert_eq!(
        api.put(
            &le,
            json!({"location": "westeurope", "tags": {"tier": "gold"}})
        )
        .await
        .0,
        201
    );
    assert_eq!(api.state(&le).await, "Stopped");
    assert_eq!(api.post(&format!("{le}/start"), json!({})).await.0, 202);
    api.wait_state(&le, "Running").await;
    let (_, v) = api
        .get(&format!(
            "{P}/media/liveEvents?$filter=properties/resourceState eq 'Running'&$label=tier=gold"
        ))
        .await;
    assert_eq!(v["value"][0]["name"], "le1");
    assert_eq!(
        api.put(&format!("{le}/liveOutputs/o1"), json!({})).await.0,
        201
    );
    api.wait_state(&format!("{le}/liveOutputs/o1"), "Running")
        .await;
    assert_eq!(api.post(&format!("{le}/stop"), json!({})).await.0, 202);
    api.wait_state(&le, "Stopped").await;
    assert_eq!(api.post(&format!("{le}/reset"), json!({})).await.0, 409);
    let se = format!("{P}/media/streamingEndpoints/se1");
    assert_eq!(api.put(&se, json!({})).await.0, 201);
    api.wait_state(&se, "Stopped").await;
    api.post(&format!("{se}/start"), json!({})).await;
    api.wait_state(&se, "Running").await;
    assert_eq!(
        api.post(&format!("{se}/scale"), json!({"scaleUnit": 3}))
            .await
            .0,
        202
    );
    api.wait_state(&se, "Running").await;
    let (_, v) = api.get(&se).await;
    assert_eq!(v["properties"]["scaleUnits"], 3);
    assert!(sim
        .changes()
        .iter()
        .any(|c| c.path == se && c.to == "Scaling"));
    let asset = format!("{P}/media/assets/a1");
    api.put(&asset, json!({})).await;
    api.wait_state(&asset, "Ready").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_token_is_required_when_configured_and_unknown_paths_and_methods_are_refused() {
    let config = SimConfig {
        token: Some("t0ken".into()),
        ..fast()
    };
    assert!(
        !format!("{config:?}").contains("t0ken"),
        "Debug hides the token"
    );
    let sim = start(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}{P}/media/assets", sim.base_url);
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_standard_error(&res.json().await.unwrap(), 401);
    assert_eq!(
        http.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth("t0ken")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = http.post(&url).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_standard_error(&res.json().await.unwrap(), 405);
    let other = format!("{}/api/v1/projects/other/media/assets", sim.base_url);
    let res = http.get(&other).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_standard_error(&res.json().await.unwrap(), 404);
    let res = http
        .get(format!("{}/nothing", sim.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_standard_error(&res.json().await.unwrap(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_seeds_forces_states_and_reports_changes_and_stats() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let seed = json!({"project": "studio-prod", "jobs": [{"transform": "t", "name": "j1"}],
        "streaming_endpoints": ["se1"], "media_live_events": ["le1"],
        "live_outputs": [{"live_event": "le1", "name": "o1"}], "live_channels": ["c1"]});
    let (s, v) = api.post("/_sim/seed", seed).await;
    assert_eq!((s, &v["created"]), (200, &json!(5)), "{v}");
    assert_eq!(
        api.post("/_sim/seed", json!({"project": "nope"})).await.0,
        404
    );
    assert!(
        !sim.stats().scopes.contains_key("studio-prod"),
        "seeding uses no rate budget"
    );
    let c1 = format!("{P}/live/liveChannels/c1");
    let (s, _) = api
        .post(
            "/_sim/state",
            json!({"path": format!("https://app.mk.io{c1}"), "state": "Running"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.state(&c1).await, "Running");
    assert_eq!(
        api.post("/_sim/state", json!({"path": "/nope", "state": "Running"}))
            .await
            .0,
        404
    );
    let (_, changes) = api.get("/_sim/changes").await;
    let last = changes
        .as_array()
        .unwrap()
        .iter()
        .rfind(|c| c["path"] == c1)
        .unwrap()
        .clone();
    assert_eq!(
        (&last["from"], &last["to"]),
        (&json!("Stopped"), &json!("Running"))
    );
    assert!(last["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        api.post("/_sim/drop-webhooks", json!({"count": 2})).await.0,
        200
    );
    let (s, stats) = api.get("/_sim/stats").await;
    assert_eq!(s, 200);
    assert_eq!(stats["scopes"]["studio-prod"]["get"]["total"], 1);
    let parsed: sim::SimStats = serde_json::from_value(stats).unwrap();
    assert_eq!(parsed, sim.stats());
    sim.shutdown().await;
}

/// Every field of `fixture` is in `actual` too (values aside), recursively; arrays compare
/// their first elements.
fn assert_fields_cover(fixture: &Value, actual: &Value, at: &str) {
    match (fixture, actual) {
        (Value::Object(f), Value::Object(a)) => {
            for (k, fv) in f {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}/{k} is missing in {actual}"));
                if k != "correlationData" && k != "labels" {
                    assert_fields_cover(fv, av, &format!("{at}/{k}"));
                }
            }
        }
        (Value::Array(f), Value::Array(a)) if !f.is_empty() => {
            assert!(!a.is_empty(), "{at} is empty");
            assert_fields_cover(&f[0], &a[0], &format!("{at}/0"));
        }
        (Value::Object(_), other) => panic!("{at} should be an object, is {other}"),
        _ => {}
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap()
}

#[tokio::test]
async fn deliveries_have_every_field_of_the_fixtures_and_the_time_of_the_change() {
    let sim = start(fast()).await;
    let api = Api::new(&sim);
    let (recv, url) = receiver(0).await;
    let types = [
        "MediaKind.JobStarted",
        "MediaKind.JobFinished",
        "MediaKind.StreamingLocatorCreated",
        "MediaKind.ChannelInstanceStarted",
        "MediaKind.ChannelInstanceStopped",
    ];
    assert_eq!(
        api.put(&format!("{P}/webhook/rules/all"), rule(&url, &types))
            .await
            .0,
        201
    );
    let jobs = format!("{P}/media/transforms/h264-ladder/jobs");
    let mut body = job_body("ep 117");
    body["properties"]["outputs"] = json!([{"label": "ladder"}, {"label": "thumbnails"}]);
    api.put(&format!("{jobs}/job-0001"), body).await;
    api.put(&format!("{jobs}/job-0002"), job_body("fail")).await;
    api.put(
        &format!("{P}/media/streamingLocators/loc-1"),
        json!({"properties": {"assetName": "job-0001-ladder"}}),
    )
    .await;
    let ch = format!("{P}/live/liveChannels/news-247");
    api.put(
        &ch,
        json!({"spec": {"state": "Running"}, "metadata": {"labels": {"team": "newsroom"}}}),
    )
    .await;
    api.wait_state(&ch, "Running").await;
    api.call(
        reqwest::Method::PATCH,
        &ch,
        Some(json!({"spec": {"state": "Stopped"}})),
    )
    .await;
    let got = wait_for("seven deliveries", || async {
        let g = recv.got.lock().unwrap().clone();
        (g.len() == 7).then_some(g)
    })
    .await;
    let find = |ty: &str, state: &str| {
        got.iter()
            .map(|g| &g.2)
            .find(|b| b["type"] == ty && b["data"]["state"] == state)
            .unwrap_or_else(|| panic!("no {ty} {state}"))
            .clone()
    };
    for (file, ty, state) in [
        ("job-started.json", "MediaKind.JobStarted", "Processing"),
        ("job-finished.json", "MediaKind.JobFinished", "Finished"),
        ("job-errored.json", "MediaKind.JobFinished", "Error"),
        (
            "streaming-locator-created.json",
            "MediaKind.StreamingLocatorCreated",
            "Created",
        ),
        (
            "channel-instance-started.json",
            "MediaKind.ChannelInstanceStarted",
            "Running",
        ),
        (
            "channel-instance-stopped.json",
            "MediaKind.ChannelInstanceStopped",
            "Stopped",
        ),
    ] {
        let event = find(ty, state);
        assert_fields_cover(&fixture(file), &event, file);
        // The event's time is the recorded change's time (to the microsecond).
        let source = event["source"]
            .as_str()
            .unwrap()
            .replace("/transforms/", "/media/transforms/");
        let change = sim
            .changes()
            .into_iter()
            .rev()
            .find(|c| c.path == source && c.to == state)
            .unwrap();
        let time = chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).unwrap();
        let at = chrono::DateTime::<chrono::Utc>::from(change.at);
        assert!(
            (at - time.to_utc()).num_microseconds().unwrap().abs() < 1,
            "{file}"
        );
    }
    sim.shutdown().await;
}
