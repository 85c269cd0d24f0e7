//! An acknowledged event is never lost: the real binary killed with SIGKILL under load and
//! restarted on the same database (SQLite and Postgres), its Postgres database made unavailable
//! under load (the daemon must answer 503 and recover without a restart), and SIGTERM under
//! load (drain within `shutdown.grace`). The long versions are `examples/crash_suite.rs` and
//! `examples/db_fault.rs`; docs/PROOF.md has the figures.

#[path = "../examples/support/mod.rs"]
mod support;

mod common;

use common::{TestDb, POSTGRES_ENV};
use std::io::Write;
use std::time::{Duration, Instant};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mkio-relay");
/// Kills per backend; the issue asks for at least 5.
const KILLS: u32 = 6;
const CONNECTIONS: usize = 8;
/// Acknowledgements each life of the daemon must see before it may be killed, so every kill
/// lands under load.
const ACKS_PER_LIFE: u64 = 100;
const KILL_JITTER: Duration = Duration::from_millis(800);
/// Bound on waiting for those acknowledgements (a hang fails the test with a message).
const LIFE_LIMIT: Duration = Duration::from_secs(20);
/// The daemon's log level: quiet, the figures are what the test prints.
const QUIET: (&str, &str) = ("MKIO_RELAY_LOG_LEVEL", "off");

async fn sigkill_under_load(db: TestDb) {
    let started = Instant::now();
    let relay = Relay::new(BIN, &db.url(), &[QUIET]).unwrap();
    let (tally, verdict) = crash_cycle(
        &relay,
        KILLS,
        CONNECTIONS,
        ACKS_PER_LIFE,
        KILL_JITTER,
        LIFE_LIMIT,
    )
    .await
    .unwrap();
    println!(
        "{} in {:.1}s",
        figures(db.backend(), KILLS, &tally, &verdict),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.acked.len() as u64 >= ACKS_PER_LIFE * u64::from(KILLS + 1),
        "too few acknowledgements for the test to mean anything"
    );
    assert!(
        verdict.lost.is_empty(),
        "lost {}, first: {:?}",
        verdict.lost.len(),
        &verdict.lost[..verdict.lost.len().min(20)]
    );
    assert!(
        verdict.duplicates.is_empty(),
        "twice: {:?}",
        verdict.duplicates
    );
    assert!(
        verdict.unknown.is_empty(),
        "never sent: {:?}",
        verdict.unknown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event_on_sqlite() {
    sigkill_under_load(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event_on_postgres() {
    let Ok(url) = std::env::var(POSTGRES_ENV) else {
        println!("{POSTGRES_ENV} is not set; Postgres not tested");
        return;
    };
    sigkill_under_load(TestDb::postgres(&url).await).await;
}

/// How long the test database is unavailable.
const OUTAGE: Duration = Duration::from_secs(3);
const RECOVER_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_answered_503_and_the_daemon_recovers_without_restart() {
    let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
        println!("{POSTGRES_ENV} is not set; Postgres not tested");
        return;
    };
    let db = TestDb::postgres(&admin_url).await;
    let relay = Relay::new(BIN, &db.url(), &[QUIET]).unwrap();
    let name = database_name(&db.url()).unwrap();
    let mut daemon = relay.start().await.unwrap();
    let load = Load::start(relay.ingest, CONNECTIONS, "fault");
    let mut outages = Vec::new();
    for _ in 0..2 {
        load.wait_acked(ACKS_PER_LIFE, LIFE_LIMIT).await.unwrap();
        let outage = database_outage(&relay, &load, &admin_url, &name, OUTAGE, RECOVER_LIMIT)
            .await
            .unwrap();
        daemon
            .check_alive()
            .expect("the daemon survives the outage");
        outages.push(outage);
    }
    load.wait_acked(ACKS_PER_LIFE, LIFE_LIMIT).await.unwrap();
    let tally = load.stop().await;
    let verdict = Verdict::of(&tally, &relay.stored_ids().await.unwrap());
    daemon.check_alive().unwrap();
    daemon.stop();
    println!("{}", figures("postgres outage", 0, &tally, &verdict));
    for (i, o) in outages.iter().enumerate() {
        println!(
            "outage {i}: {OUTAGE:?}, 2xx during {}, other answers during {:?}, first 2xx {} ms \
             and /readyz 200 {} ms after the database came back",
            o.acked_during,
            o.statuses_during,
            o.first_ack_after.as_millis(),
            o.ready_after.as_millis()
        );
        assert_eq!(
            o.acked_during, 0,
            "acknowledged while the database was down"
        );
        assert!(
            o.statuses_during.keys().any(|s| *s == 503),
            "no 503 during the outage: {:?}",
            o.statuses_during
        );
        assert!(
            o.statuses_during.keys().all(|s| *s >= 500),
            "only 5xx during the outage: {:?}",
            o.statuses_during
        );
    }
    assert!(
        verdict.is_clean(),
        "lost {:?}, twice {:?}",
        verdict.lost,
        verdict.duplicates
    );
}

/// The grace period the SIGTERM test sets, and the slack allowed above it for the process to
/// exit and be reaped on a loaded machine.
const GRACE: Duration = Duration::from_secs(3);
const EXIT_SLACK: Duration = Duration::from_secs(2);
/// A body timeout far beyond the grace, so a stalled upload is still open when it ends.
const LONG_BODY_TIMEOUT: &str = "60s";

/// Opens an ingest request whose body never finishes.
fn stalled_upload(relay: &Relay) -> std::net::TcpStream {
    let mut tcp = std::net::TcpStream::connect(relay.ingest).unwrap();
    write!(
        tcp,
        "POST /webhooks/mkio HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {PROOF_SECRET}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"specversion\""
    )
    .unwrap();
    tcp
}

async fn sigterm_under_load(db: TestDb) {
    let grace = format!("{}s", GRACE.as_secs());
    let relay = Relay::new(
        BIN,
        &db.url(),
        &[
            QUIET,
            ("MKIO_RELAY_SHUTDOWN_GRACE", &grace),
            ("MKIO_RELAY_INGEST_BODY_TIMEOUT", LONG_BODY_TIMEOUT),
        ],
    )
    .unwrap();
    let load = Load::start(relay.ingest, CONNECTIONS, "term");
    // Round 1, a clean drain: load only. Round 2: also an upload that never finishes, which
    // the grace period must cut short.
    for stalled in [false, true] {
        let mut daemon = relay.start().await.unwrap();
        load.wait_acked(ACKS_PER_LIFE, LIFE_LIMIT).await.unwrap();
        let _upload = stalled.then(|| stalled_upload(&relay));
        if stalled {
            // The connect returns once the kernel queued the connection, before the relay has
            // accepted it and read the head: a SIGTERM sent at once can find no request in
            // flight (a clean, early exit). The relay reads a head in microseconds; a second
            // leaves room for a busy CI machine and is well inside the grace period.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let signalled = Instant::now();
        let status = daemon
            .terminate_and_wait(GRACE + EXIT_SLACK)
            .unwrap_or_else(|| panic!("no exit within {:?} of SIGTERM", GRACE + EXIT_SLACK));
        let took = signalled.elapsed();
        println!(
            "{} SIGTERM (stalled upload: {stalled}): exit {status} after {} ms",
            db.backend(),
            took.as_millis()
        );
        if stalled {
            // Abandoning work is reported by a failure exit, after the grace and not before.
            assert!(!status.success());
            assert!(took >= GRACE, "exited before the grace period: {took:?}");
        } else {
            assert!(status.success(), "{status}");
            assert!(took < GRACE, "a clean drain took {took:?}");
        }
    }
    let mut daemon = relay.start().await.unwrap();
    load.wait_acked(ACKS_PER_LIFE, LIFE_LIMIT).await.unwrap();
    let tally = load.stop().await;
    let verdict = Verdict::of(&tally, &relay.stored_ids().await.unwrap());
    daemon.stop();
    println!(
        "{}",
        figures(&format!("{} SIGTERM", db.backend()), 0, &tally, &verdict)
    );
    assert!(
        verdict.is_clean(),
        "lost {:?}, twice {:?}",
        verdict.lost,
        verdict.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_within_the_grace_period_on_sqlite() {
    sigterm_under_load(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_within_the_grace_period_on_postgres() {
    let Ok(url) = std::env::var(POSTGRES_ENV) else {
        println!("{POSTGRES_ENV} is not set; Postgres not tested");
        return;
    };
    sigterm_under_load(TestDb::postgres(&url).await).await;
}
