//! Two real mkio-relay processes on one Postgres database: each event is delivered once per
//! subscription, and a stream client on one replica sees events ingested through the other.
//! Runs when `MKIO_RELAY_TEST_POSTGRES_URL` is set (CI sets it).

mod common;

use common::{job_event, Receiver, SseClient, TestDb, SECRET};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

struct Replica {
    child: Child,
    ingest: String,
    api: String,
}

impl Replica {
    fn start(db_url: &str) -> Self {
        Self::start_with(db_url, &[])
    }

    fn start_with(db_url: &str, extra: &[(&str, &str)]) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (ingest, api) = (
            format!("127.0.0.1:{}", port()),
            format!("127.0.0.1:{}", port()),
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mkio-relay"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MKIO_RELAY_")) {
            cmd.env_remove(k);
        }
        cmd.envs(extra.iter().copied());
        let child = cmd
            .env("MKIO_RELAY_DATABASE_URL", db_url)
            .env("MKIO_RELAY_WEBHOOK_SECRETS", SECRET)
            .env("MKIO_RELAY_INGEST_LISTEN", &ingest)
            .env("MKIO_RELAY_API_LISTEN", &api)
            .env("MKIO_RELAY_DELIVERY_CONCURRENCY", "8")
            .env("MKIO_RELAY_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mkio-relay");
        Self {
            child,
            ingest: format!("http://{ingest}"),
            api: format!("http://{api}"),
        }
    }

    async fn ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + LONG;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.api)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "replica exited during start-up"
            );
            assert!(Instant::now() < deadline, "replica not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_processes_deliver_each_event_once_and_wake_each_other() {
    let Ok(admin) = std::env::var(common::POSTGRES_ENV) else {
        return;
    };
    let db = TestDb::postgres(&admin).await;
    let client = reqwest::Client::new();
    let mut a = Replica::start(&db.url());
    a.ready(&client).await;
    let mut b = Replica::start(&db.url());
    b.ready(&client).await;

    let receiver = Receiver::start(vec![]).await;
    let created: Value = client
        .post(format!("{}/v1/subscriptions", a.api))
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let mut stream =
        SseClient::connect(&client, &format!("{}/v1/events/stream", a.api), None).await;

    const EVENTS: usize = 120;
    let mut posts = Vec::new();
    for i in 0..EVENTS {
        let ingest = if i % 2 == 0 {
            a.ingest.clone()
        } else {
            b.ingest.clone()
        };
        let client = client.clone();
        // Ten jobs, twelve events each, so per-resource order is exercised.
        let body = job_event(&format!("e{i}"), &format!("j{}", i % 10), "Processing").to_string();
        posts.push(tokio::spawn(async move {
            let r = client
                .post(format!("{ingest}/webhooks/mkio"))
                .bearer_auth(SECRET)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }));
    }
    for p in posts {
        p.await.unwrap();
    }

    // The stream on replica A sees all of them, including those ingested through B.
    let mut seen = 0;
    while seen < EVENTS {
        stream
            .next(LONG)
            .await
            .unwrap_or_else(|| panic!("stream ended after {seen} events"));
        seen += 1;
    }

    let got = receiver.wait_delivered(EVENTS, LONG).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = receiver.delivered();
    assert_eq!(
        got_after.len(),
        EVENTS,
        "no event delivered twice (receiver never failed)"
    );
    let mut last_per_job: HashMap<String, i64> = HashMap::new();
    for r in &got {
        assert!(r.signed_with(&secret));
        let event = &r.json()["data"]["event"];
        let job = event["resource"]["job"].as_str().unwrap().to_owned();
        let seq = event["seq"].as_i64().unwrap();
        let last = last_per_job.insert(job.clone(), seq).unwrap_or(0);
        assert!(seq > last, "{job}: {seq} after {last}");
    }
    drop(a);
    drop(b);
}

/// Two replicas polling one project share one budget (a lease in the database), and polling
/// goes on when the lease holder is killed.
#[tokio::test]
async fn two_replicas_poll_within_one_budget_and_survive_the_holder_dying() {
    use mkio_relay::sim::{self, SimConfig};
    let admin = std::env::var(common::POSTGRES_ENV)
        .expect("MKIO_RELAY_TEST_POSTGRES_URL must name a Postgres server for this test");
    let db = TestDb::postgres(&admin).await;
    let sim = sim::start(
        SimConfig {
            projects: vec!["p".into()],
            token: Some("t".into()),
            live_transition: Duration::from_millis(200),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("se{i}")).collect();
    let client = reqwest::Client::new();
    client
        .post(format!("{}/_sim/seed", sim.base_url))
        .json(&json!({"project": "p", "streaming_endpoints": names}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // A budget of 120 GET a minute (2 a second), far less than 40 watches at 200 ms want.
    let env = [
        ("MKIO_RELAY_MKIO_BASE_URL", sim.base_url.as_str()),
        ("MKIO_RELAY_MKIO_TOKEN", "t"),
        ("MKIO_RELAY_MKIO_PROJECTS", "p"),
        ("MKIO_RELAY_MKIO_GET_LIMIT_PER_MINUTE", "480"),
        ("MKIO_RELAY_POLL_KINDS", "streaming_endpoint"),
        ("MKIO_RELAY_POLL_FAST_INTERVAL", "200ms"),
        ("MKIO_RELAY_POLL_SLOW_INTERVAL", "200ms"),
        ("MKIO_RELAY_POLL_LEASE_TTL", "2s"),
    ];
    let mut a = Replica::start_with(&db.url(), &env);
    let mut b = Replica::start_with(&db.url(), &env);
    a.ready(&client).await;
    b.ready(&client).await;
    let gets = || sim.stats().scopes.get("p").map_or(0, |s| s.get.total);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (t0, n0) = (Instant::now(), gets());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rate = (gets() - n0) as f64 / t0.elapsed().as_secs_f64();
    assert!(rate <= 2.5, "{rate:.2} GET/s: more than one budget (2/s)");
    assert!(rate >= 1.0, "{rate:.2} GET/s: polling stalled");

    // Kill the lease holder without letting it release the lease.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url())
        .await
        .unwrap();
    let (holder,): (String,) = sqlx::query_as("SELECT holder FROM leases WHERE name = 'poll:p'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (victim, survivor) = if holder.contains(&format!("-{}-", a.child.id())) {
        (&mut a, &b)
    } else {
        assert!(holder.contains(&format!("-{}-", b.child.id())), "{holder}");
        (&mut b, &a)
    };
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    // The survivor takes the lease once it expires and goes on polling: a change is seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n1 = gets();
    sim.set_state("/api/v1/projects/p/media/streamingEndpoints/se3", "Running");
    let r = client
        .get(format!(
            "{}/v1/resources/streaming_endpoint/p/se3?wait=40s&until=Running",
            survivor.api
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(gets() > n1, "the survivor polls");
    let (after,): (String,) = sqlx::query_as("SELECT holder FROM leases WHERE name = 'poll:p'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_ne!(after, holder, "the lease moved to the survivor");
    sim.shutdown().await;
}
