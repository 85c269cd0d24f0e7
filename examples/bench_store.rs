//! Store-only append throughput: batches of synthetic ~1.5 KB job events appended back to back
//! by one task, no HTTP. Separates the database's cost from the server's.
//!
//! `cargo run --release --example bench_store -- [--batch 36] [--batches 2000] [--postgres URL]`

use mkio_relay::domain::event::{CloudEvent, NewEvent, Origin};
use mkio_relay::store::{self, StoreOptions};
use serde_json::json;
use std::time::Instant;

fn event(i: usize) -> NewEvent {
    let ce = CloudEvent::from_json(json!({
        "specversion": "1.0", "id": format!("bench-{i}"), "type": "MediaKind.JobFinished",
        "source": format!("/api/v1/projects/p/transforms/t/jobs/job-{i}"),
        "time": "2025-03-14T09:09:47Z",
        "data": {"projectName": "p", "previousState": "Processing", "state": "Finished",
                 "resource": {"name": format!("job-{i}"), "properties": {"state": "Finished",
                    "description": "x".repeat(900),
                    "outputs": [{"label": "ladder", "assetName": "a", "state": "Finished", "progress": 100}]}}}
    }))
    .expect("valid");
    let raw = serde_json::to_vec(&ce.data).expect("json");
    NewEvent::normalize(ce, raw, 0, Origin::Webhook)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let batch: usize = arg("--batch").map_or(Ok(36), |v| v.parse())?;
    let batches: usize = arg("--batches").map_or(Ok(2000), |v| v.parse())?;
    let dir = tempfile::tempdir()?;
    let url = match arg("--postgres") {
        Some(url) => url,
        None => format!("sqlite:{}", dir.path().join("bench.db").display()),
    };
    let store = store::open(&url, &StoreOptions::default()).await?;
    store.migrate().await?;
    let events: Vec<NewEvent> = (0..batch * batches).map(event).collect();
    let started = Instant::now();
    let mut times = Vec::with_capacity(batches);
    for chunk in events.chunks(batch) {
        let t = Instant::now();
        store.append(chunk).await?;
        times.push(t.elapsed().as_micros() as u64);
        if times.len() % 50 == 0 {
            store.maintain().await?;
        }
    }
    let total = started.elapsed().as_secs_f64();
    times.sort_unstable();
    println!(
        "{}: {} batches of {}: {:.0} events/s; per batch p50 {} us, p99 {} us",
        store.backend(),
        batches,
        batch,
        (batch * batches) as f64 / total,
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    Ok(())
}
