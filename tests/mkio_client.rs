//! The MK.IO client against small axum mock servers on 127.0.0.1: headers, pagination and
//! next links, query encoding, retries through the budget, timeouts, redirects, and the
//! webhook rule calls.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mkio_relay::config::{Config, MkioConfig, Secret};
use mkio_relay::mkio::rules::{self, Applied, HistoryEntry, RuleSettings};
use mkio_relay::mkio::{Class, ListQuery, MkioClient, MkioError, Scope};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "test-jwt-not-real";
const PAGE_1: &str = include_str!("fixtures/state-responses/list-page-1.json");
const PAGE_2: &str = include_str!("fixtures/state-responses/list-page-2.json");
const ERROR_429: &str = include_str!("fixtures/state-responses/error-429.json");
const JOB_STATE: &str = include_str!("fixtures/state-responses/job-state-processing.json");

/// A request the mock received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What the mock answers: status, headers, body, after an optional delay.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        delay: Duration::ZERO,
    }
}

type Script = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Mock {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

impl Mock {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a mock; `script` gets each request and how many came before it.
async fn mock(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> (String, Mock) {
    let state = Mock {
        seen: Arc::default(),
        script: Arc::new(script),
    };
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, state)
}

async fn handle(State(mock): State<Mock>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: body.to_vec(),
    };
    let index = {
        let mut all = mock.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let r = (mock.script)(&seen, index);
    tokio::time::sleep(r.delay).await;
    let mut response = Response::builder().status(StatusCode::from_u16(r.status).unwrap());
    for (name, value) in r.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(r.body)).unwrap()
}

fn config(base: &str) -> MkioConfig {
    MkioConfig {
        base_url: base.to_owned(),
        token: Secret::new(TOKEN),
        projects: vec!["studio-prod".into()],
        request_timeout: Duration::from_secs(5),
        get_limit_per_minute: 2000,
        write_limit_per_minute: 1000,
        budget_fraction: 1.0,
        max_backoff: Duration::from_millis(50),
        token_expiry_warning: Duration::from_secs(14 * 86_400),
        rule_name: "mkio-relay".into(),
        rule_url: "https://relay.example.com/webhooks/mkio".into(),
        rule_events: vec![
            "MediaKind.JobStarted".into(),
            "MediaKind.JobFinished".into(),
        ],
    }
}

fn client(base: &str) -> MkioClient {
    MkioClient::new(&config(base)).unwrap()
}

/// Bounds every test, so a hang fails with a message instead of stalling the suite.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the test finished within 20 s")
}

const JOBS: &str = "/api/v1/projects/studio-prod/media/transforms/h264-ladder/jobs";

#[tokio::test]
async fn every_request_sends_the_bearer_token_and_json_headers() {
    let (base, server) = mock(|seen, _| match seen.method.as_str() {
        "PUT" => reply(201, r#"{"ok":true}"#),
        "DELETE" => reply(204, ""),
        _ => reply(200, r#"{"name":"a"}"#),
    })
    .await;
    let c = client(&base);
    within(async {
        assert_eq!(
            c.get("/api/v1/user/rbac").await.unwrap(),
            json!({"name":"a"})
        );
        let (status, body) = c.put(JOBS, &json!({"x": 1})).await.unwrap();
        assert_eq!((status, body), (201, json!({"ok": true})));
        assert_eq!(c.delete(JOBS).await.unwrap(), 204);
    })
    .await;
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.header("authorization"), Some(&*format!("Bearer {TOKEN}")));
        assert_eq!(s.header("accept"), Some("application/json"));
    }
    assert_eq!(seen[0].header("content-type"), None, "a GET has no body");
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
    assert_eq!(seen[1].json(), json!({"x": 1}));
    assert!(
        !format!("{c:?}").contains(TOKEN),
        "Debug never shows the token"
    );
    // Each request took a slot of its scope and class.
    let budget = c.budget();
    let project = Scope::Project("studio-prod".into());
    assert_eq!(budget.remaining(&Scope::Organization, Class::Read), 1999);
    assert_eq!(budget.remaining(&project, Class::Write), 998);
    assert_eq!(budget.remaining(&project, Class::Read), 2000);
}

#[tokio::test]
async fn state_reads_each_documented_shape() {
    let (base, server) = mock(|seen, _| {
        let body = match seen.path.as_str() {
            p if p.ends_with("/jobs/j1/state") => JOB_STATE.to_owned(),
            p if p.ends_with("/assets/a1/state") => r#"{"properties":{"state":"Ready"}}"#.into(),
            p if p.ends_with("/liveEvents/e1/state") => {
                r#"{"properties":{"resourceState":"Running"}}"#.into()
            }
            p if p.ends_with("/x/state") => r#"{"state":"Stopped"}"#.into(),
            _ => r#"{"status":{}}"#.into(),
        };
        reply(200, body)
    })
    .await;
    let c = client(&base);
    let p = "/api/v1/projects/studio-prod/media";
    within(async {
        assert_eq!(c.state(&format!("{JOBS}/j1")).await.unwrap(), "Processing");
        assert_eq!(c.state(&format!("{p}/assets/a1/")).await.unwrap(), "Ready");
        assert_eq!(
            c.state(&format!("{p}/liveEvents/e1")).await.unwrap(),
            "Running"
        );
        assert_eq!(c.state(&format!("{p}/x")).await.unwrap(), "Stopped");
        let odd = c.state(&format!("{p}/y")).await.unwrap_err();
        assert!(matches!(odd, MkioError::Decode(_)), "{odd}");
    })
    .await;
    assert_eq!(server.seen()[1].path, format!("{p}/assets/a1/state"));
}

#[tokio::test]
async fn pages_follow_absolute_and_relative_next_links() {
    // Page 1 is the fixture with its absolute link pointed at the mock; page 2 links back
    // relatively (as the legacy API did); page 3 is the fixture's last page.
    let base_cell: Arc<Mutex<String>> = Arc::default();
    let cell = base_cell.clone();
    let (base, server) = mock(move |seen, _| {
        let base = cell.lock().unwrap().clone();
        match seen.query.as_deref() {
            Some("$top=2") => reply(
                200,
                PAGE_1
                    .replace("https://app.mk.io", &base)
                    .replace("Zk3qT0a9WmRjb1xwQ2lO", "tok%2B1"),
            ),
            Some("$top=2&$skiptoken=tok%2B1") => reply(
                200,
                json!({"value":[{"name":"job-0002b"}],
                       "@odata.nextLink": format!("{JOBS}?$top=2&$skiptoken=tok2==")})
                .to_string(),
            ),
            Some("$top=2&$skiptoken=tok2==") => reply(200, PAGE_2),
            other => reply(400, format!(r#"{{"error":"unexpected query {other:?}"}}"#)),
        }
    })
    .await;
    *base_cell.lock().unwrap() = base.clone();
    let c = client(&base);
    let query = ListQuery {
        top: Some(2),
        ..Default::default()
    };
    let items = within(c.list(JOBS, &query)).await.unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["job-0001", "job-0002", "job-0002b", "job-0003"]);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|s| s.path == JOBS && s.header("authorization") == Some(&*format!("Bearer {TOKEN}"))));

    // Page at a time: the next link comes back verbatim.
    let page = within(c.list_page(JOBS, Some(&query))).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(
        page.next.as_deref(),
        Some(&*format!("{base}{JOBS}?$top=2&$skiptoken=tok%2B1"))
    );
    let page = within(c.list_page(page.next.as_deref().unwrap(), None))
        .await
        .unwrap();
    assert_eq!(
        page.next.as_deref(),
        Some(&*format!("{JOBS}?$top=2&$skiptoken=tok2=="))
    );
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_refused_and_never_gets_the_token() {
    let (foreign, elsewhere) = mock(|_, _| reply(200, r#"{"value":[]}"#)).await;
    let link = format!("{foreign}{JOBS}?$skiptoken=abc");
    let (base, home) = mock(move |_, _| {
        reply(
            200,
            json!({"value":[{"name":"a"}], "@odata.nextLink": link}).to_string(),
        )
    })
    .await;
    let c = client(&base);
    let err = within(c.list(JOBS, &ListQuery::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MkioError::Refused(m) if m.contains(&foreign)),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(home.seen().len(), 1);
    assert!(
        elsewhere.seen().is_empty(),
        "nothing was sent to the other origin"
    );
    // Nor directly, nor through a protocol-relative link.
    let host = foreign.trim_start_matches("http:");
    for target in [format!("{foreign}/api/v1/user/rbac"), format!("{host}/x")] {
        let err = within(c.get(&target)).await.unwrap_err();
        assert!(matches!(err, MkioError::Refused(_)), "{target}: {err}");
    }
    assert!(elsewhere.seen().is_empty());
}

#[tokio::test]
async fn filter_and_labels_are_percent_encoded() {
    let (base, server) = mock(|_, _| reply(200, r#"{"value":[]}"#)).await;
    let c = client(&base);
    let query = ListQuery {
        top: Some(10),
        filter: Some("properties/resourceState eq 'Running'".into()),
        labels: vec!["env=prod".into(), "team~media ops".into()],
        label_keys: vec!["owner".into(), "cost&center".into()],
    };
    let path = "/api/v1/projects/studio-prod/media/assets";
    assert!(within(c.list(path, &query)).await.unwrap().is_empty());
    let seen = &server.seen()[0];
    assert_eq!(
        seen.query.as_deref(),
        Some(
            "$top=10&$filter=properties%2FresourceState%20eq%20%27Running%27\
             &$label=env%3Dprod&$label=team~media%20ops&$label_key=owner&$label_key=cost%26center"
        )
    );
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(seen.query.as_deref().unwrap().as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|p| p.0 == k)
            .map(|p| p.1.as_str())
            .collect()
    };
    assert_eq!(get("$filter"), ["properties/resourceState eq 'Running'"]);
    assert_eq!(get("$label"), ["env=prod", "team~media ops"]);
    assert_eq!(get("$label_key"), ["owner", "cost&center"]);
}

fn throttled() -> Reply {
    let mut r = reply(429, ERROR_429);
    r.headers.push(("retry-after", "0".into()));
    r
}

#[tokio::test]
async fn throttling_is_retried_within_max_attempts_and_pauses_the_scope() {
    let (base, server) = mock(|_, n| {
        if n < 2 {
            throttled()
        } else {
            reply(200, r#"{"ok":1}"#)
        }
    })
    .await;
    let c = client(&base).with_max_attempts(4);
    let scope = Scope::Project("studio-prod".into());
    assert_eq!(within(c.get(JOBS)).await.unwrap(), json!({"ok": 1}));
    assert_eq!(server.seen().len(), 3);
    assert_eq!(
        c.budget().failures(&scope),
        0,
        "the success reset the count"
    );

    // With one attempt (the default) the 429 comes back, with MK.IO's ref.
    let (base, server) = mock(|_, _| throttled()).await;
    let c = client(&base);
    let err = within(c.get(JOBS)).await.unwrap_err();
    assert_eq!(server.seen().len(), 1);
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.reference(), Some("b7e4c2a9f05d4e6b8c31d2a7e9f04b15"));
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
    assert!(err.to_string().contains("b7e4c2a9f05d4e6b8c31d2a7e9f04b15"));
    assert_eq!(c.budget().failures(&scope), 1);
    assert_eq!(c.budget().failures(&Scope::Organization), 0);
}

#[tokio::test]
async fn server_errors_stop_after_max_attempts_and_client_errors_are_not_retried() {
    let (base, server) = mock(|seen, _| {
        if seen.path.ends_with("/missing") {
            reply(404, r#"{"error":{"code":"NotFound","detail":"no such job"},"status":404,"ref":"r-404"}"#)
        } else {
            reply(503, r#"{"error":{"code":"Unavailable","detail":"down"},"status":503,"ref":"r-503"}"#)
        }
    })
    .await;
    let c = client(&base).with_max_attempts(3);
    let err = within(c.post(&format!("{JOBS}/j1/cancelJob"), &json!({})))
        .await
        .unwrap_err();
    assert_eq!(server.seen().len(), 3);
    assert_eq!((err.status(), err.reference()), (Some(503), Some("r-503")));
    assert_eq!(
        c.budget().failures(&Scope::Project("studio-prod".into())),
        3
    );

    let err = within(c.get("/api/v1/projects/other/missing"))
        .await
        .unwrap_err();
    assert_eq!(server.seen().len(), 4, "a 404 is not retried");
    assert_eq!(
        err,
        MkioError::Api {
            status: 404,
            code: "NotFound".into(),
            detail: "no such job".into(),
            reference: Some("r-404".into()),
        }
    );
    assert_eq!(c.budget().failures(&Scope::Project("other".into())), 0);
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout_and_pauses_the_scope() {
    let (base, _mock) = mock(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..reply(200, "{}")
    })
    .await;
    let mut cfg = config(&base);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.max_backoff = Duration::from_secs(60);
    let c = MkioClient::new(&cfg).unwrap();
    let started = std::time::Instant::now();
    let err = within(c.patch(JOBS, &json!({"a": 1}))).await.unwrap_err();
    assert_eq!(err, MkioError::Timeout);
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(2));
    let scope = Scope::Project("studio-prod".into());
    assert_eq!(c.budget().failures(&scope), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (foreign, elsewhere) = mock(|_, _| reply(200, "{}")).await;
    let (base, _mock) = mock(move |_, _| {
        let mut r = reply(302, "");
        r.headers.push(("location", format!("{foreign}/steal")));
        r
    })
    .await;
    let err = within(client(&base).get(JOBS)).await.unwrap_err();
    assert_eq!(err.status(), Some(302));
    assert!(elsewhere.seen().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = within(client(&format!("http://127.0.0.1:{port}")).get(JOBS))
        .await
        .unwrap_err();
    assert!(matches!(err, MkioError::Transport(_)), "{err}");
    assert!(err.is_transient());
    assert!(!err.to_string().contains(TOKEN));
}

fn rules_config(base: &str) -> Config {
    Config::load_with_env(
        None,
        &[
            ("MKIO_RELAY_WEBHOOK_SECRETS", "first-secret,second-secret"),
            ("MKIO_RELAY_MKIO_BASE_URL", base),
            ("MKIO_RELAY_MKIO_TOKEN", TOKEN),
            ("MKIO_RELAY_MKIO_PROJECTS", "studio-prod,archive"),
            (
                "MKIO_RELAY_MKIO_RULE_URL",
                "https://relay.example.com/webhooks/mkio",
            ),
            (
                "MKIO_RELAY_MKIO_RULE_EVENTS",
                "MediaKind.JobStarted,MediaKind.JobFinished",
            ),
        ],
    )
    .expect("test config")
}

#[tokio::test]
async fn rules_apply_puts_the_whole_spec_created_then_replaced() {
    let (base, server) = mock(|_, n| reply(if n == 0 { 201 } else { 200 }, "{}")).await;
    let config = rules_config(&base);
    let settings = RuleSettings::from_config(&config).unwrap();
    let c = MkioClient::new(&config.mkio).unwrap();
    let projects = rules::projects(&config.mkio, None).unwrap();
    assert_eq!(projects, ["studio-prod", "archive"]);
    within(async {
        assert_eq!(
            rules::apply(&c, "studio-prod", &settings).await.unwrap(),
            Applied::Created
        );
        assert_eq!(
            rules::apply(&c, "studio-prod", &settings).await.unwrap(),
            Applied::Replaced
        );
    })
    .await;
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.method, "PUT");
        assert_eq!(
            s.path,
            "/api/v1/projects/studio-prod/webhook/rules/mkio-relay"
        );
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert_eq!(
            s.json(),
            json!({"spec": {
                "url": "https://relay.example.com/webhooks/mkio",
                "enabled": true,
                "events": ["MediaKind.JobStarted", "MediaKind.JobFinished"],
                "authentication": {
                    "headers": {"Authorization": "Bearer first-secret"},
                    "queryParams": {}
                }
            }})
        );
    }
}

#[tokio::test]
async fn rules_show_returns_the_rule_or_none() {
    let (base, _mock) = mock(|seen, _| {
        if seen.path.contains("/projects/studio-prod/") {
            reply(200, r#"{"metadata":{"name":"mkio-relay"},"spec":{"url":"u","authentication":{"headers":{"Authorization":"******"}}}}"#)
        } else {
            reply(404, r#"{"error":{"code":"NotFound","detail":"no rule"},"status":404,"ref":"r"}"#)
        }
    })
    .await;
    let c = client(&base);
    let rule = within(rules::show(&c, "studio-prod", "mkio-relay"))
        .await
        .unwrap();
    assert_eq!(rule.unwrap()["metadata"]["name"], "mkio-relay");
    assert_eq!(
        within(rules::show(&c, "archive", "mkio-relay"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn rules_history_follows_next_links_and_stops_at_the_limit() {
    let events = "/api/v1/projects/studio-prod/webhook/rules/mkio-relay/events";
    let (base, server) = mock(move |seen, _| match seen.query.as_deref() {
        None => reply(
            200,
            json!({"value": [
                {"created": "2025-03-14T09:09:48Z", "source": "/api/v1/projects/studio-prod/media/transforms/t/jobs/j1", "type": "MediaKind.JobFinished", "status": "Sent"},
                {"created": "2025-03-14T09:10:00Z", "source": "/api/v1/projects/studio-prod/media/transforms/t/jobs/j2", "type": "MediaKind.JobStarted", "status": "Failed"}
            ], "supplemental": {}, "@odata.nextLink": format!("{events}?$skiptoken=p2")})
            .to_string(),
        ),
        Some("$skiptoken=p2") => reply(
            200,
            json!({"value": [
                {"created": "2025-03-14T09:11:00Z", "source": "/x", "type": "MediaKind.JobStarted", "status": "Retrying"},
                {"created": "2025-03-14T09:12:00Z", "source": "/y", "type": "MediaKind.JobFinished", "status": "Failed"}
            ]})
            .to_string(),
        ),
        other => reply(400, format!("unexpected {other:?}")),
    })
    .await;
    let c = client(&base);
    let all = within(rules::history(&c, "studio-prod", "mkio-relay", 100))
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[1],
        HistoryEntry {
            created: "2025-03-14T09:10:00Z".into(),
            source: "/api/v1/projects/studio-prod/media/transforms/t/jobs/j2".into(),
            r#type: "MediaKind.JobStarted".into(),
            status: "Failed".into(),
        }
    );
    let counts = rules::count_by_status(&all);
    assert_eq!(counts.get("Failed"), Some(&2));
    assert_eq!(counts.get("Sent"), Some(&1));
    assert_eq!(counts.get("Retrying"), Some(&1));
    assert_eq!(server.seen().len(), 2);

    let first = within(rules::history(&c, "studio-prod", "mkio-relay", 2))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        server.seen().len(),
        3,
        "no next page is read beyond the limit"
    );
}

#[test]
fn rules_settings_name_what_is_missing() {
    let base = "https://app.mk.io";
    let mut config = rules_config(base);
    config.mkio.rule_url.clear();
    let err = RuleSettings::from_config(&config).unwrap_err().to_string();
    assert!(
        err.contains("mkio.rule_url") && err.contains("MKIO_RELAY_MKIO_RULE_URL"),
        "{err}"
    );
    let mut config = rules_config(base);
    config.webhook.secrets.clear();
    let err = RuleSettings::from_config(&config).unwrap_err().to_string();
    assert!(
        err.contains("webhook.secrets") && err.contains("MKIO_RELAY_WEBHOOK_SECRETS"),
        "{err}"
    );
    let mut config = rules_config(base);
    config.mkio.projects.clear();
    let err = rules::projects(&config.mkio, None).unwrap_err().to_string();
    assert!(err.contains("MKIO_RELAY_MKIO_PROJECTS"), "{err}");
    assert_eq!(rules::projects(&config.mkio, Some("p1")).unwrap(), ["p1"]);
    config.mkio.token = Secret::new("");
    let err = rules::projects(&config.mkio, Some("p1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("MKIO_RELAY_MKIO_TOKEN"), "{err}");
    let err = MkioClient::new(&config.mkio).unwrap_err().to_string();
    assert!(err.contains("MKIO_RELAY_MKIO_TOKEN"), "{err}");
}

#[test]
fn metrics_name_the_scope_method_status_and_code() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // A current-thread runtime inside the local recorder: every metric call runs on this thread.
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (base, _server) = mock(|seen, _| match seen.path.as_str() {
                p if p.ends_with("/throttled") => throttled(),
                p if p.ends_with("/slow") => Reply {
                    delay: Duration::from_secs(3),
                    ..reply(200, "{}")
                },
                _ => reply(200, "{}"),
            })
            .await;
            let mut cfg = config(&base);
            cfg.request_timeout = Duration::from_millis(200);
            let c = MkioClient::new(&cfg).unwrap();
            within(async {
                c.get(JOBS).await.unwrap();
                c.get(&format!("{JOBS}/throttled")).await.unwrap_err();
                c.get("/api/v1/slow").await.unwrap_err();
            })
            .await;
        });
    });
    let text = handle.render();
    for line in [
        r#"mkio_requests_total{scope="studio-prod",method="GET",status="200"} 1"#,
        r#"mkio_requests_total{scope="studio-prod",method="GET",status="429"} 1"#,
        r#"mkio_requests_total{scope="organization",method="GET",status="timeout"} 1"#,
        r#"mkio_throttled_total{scope="studio-prod"} 1"#,
        r#"mkio_errors_total{scope="studio-prod",status="429",code="TooManyRequests"} 1"#,
        r#"mkio_errors_total{scope="organization",status="timeout",code=""} 1"#,
        r#"mkio_budget_remaining{scope="studio-prod",class="read"} 1998"#,
        r#"mkio_budget_remaining{scope="organization",class="read"} 1999"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(
        text.contains(r#"mkio_last_success_timestamp_seconds{scope="studio-prod"}"#),
        "{text}"
    );
    assert!(!text.contains(r#"mkio_last_success_timestamp_seconds{scope="organization"}"#));
}
