//! The dispatcher: claims due deliveries from the outbox and POSTs them, signed with Standard
//! Webhooks v1, to subscribers; records every attempt; retries on a schedule (honouring
//! Retry-After), disables a subscription on 410, dead-letters after the last attempt.

use crate::config::DeliveryConfig;
use crate::domain::subscription::next_delay;
use crate::domain::time::{format_ms, now_ms};
use crate::http::views;
use crate::ingest::signature::{decode_secret, sign};
use crate::store::outbox::{AttemptOutcome, AttemptRecord, AttemptResult, Claimed, Subscription};
use crate::store::{Store, StoredEvent};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The dispatcher looks for due deliveries at least this often, whatever woke it.
const SAFETY_TICK: Duration = Duration::from_secs(1);

/// A claim outlives the attempt's timeout by this much before another dispatcher may take it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// How often the outbox's pending and dead-lettered deliveries are counted for metrics.
const COUNT_OUTBOX_EVERY: Duration = Duration::from_secs(10);

/// The error text kept for an attempt is cut to this many characters.
const ERROR_TEXT_MAX: usize = 500;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    config: DeliveryConfig,
    slots: Arc<Semaphore>,
    /// Fired when attempts are recorded (slots are free, a resource's next delivery may be
    /// due), and by the API after a manual retry or a replay.
    wake: Arc<Notify>,
    /// Finished attempts, with the slot each holds, on their way to the recorder, which writes
    /// all that are waiting in one transaction.
    results: mpsc::UnboundedSender<(AttemptResult, OwnedSemaphorePermit)>,
    results_rx:
        std::sync::Mutex<Option<mpsc::UnboundedReceiver<(AttemptResult, OwnedSemaphorePermit)>>>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, config: DeliveryConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.attempt_timeout)
            .user_agent(concat!("mkio-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (results, results_rx) = mpsc::unbounded_channel();
        Ok(Self {
            store,
            client,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            config,
            wake: Arc::new(Notify::new()),
            results,
            results_rx: std::sync::Mutex::new(Some(results_rx)),
        })
    }

    /// What wakes the dispatcher to look for due deliveries at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Delivers until `cancel`, then lets attempts in flight finish (each is bounded by the
    /// attempt timeout). Wakes when a local commit queued deliveries (`queued`, from the
    /// writer), on finished attempts, retries and replays, at the next due time, and on a
    /// safety tick. Deliveries queued by another replica are that replica's to send at once;
    /// this one takes them on its next tick if they are still due (a replica that died).
    pub async fn run(self: Arc<Self>, queued: Arc<Notify>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let recorder_stop = CancellationToken::new();
        let taken = self
            .results_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let recorder =
            taken.map(|rx| tokio::spawn(self.clone().record_results(rx, recorder_stop.clone())));
        let counter = tokio::spawn(count_outbox(self.store.clone(), cancel.clone()));
        while !cancel.is_cancelled() {
            let wait = match self.run_once(&tracker).await {
                Ok(wait) => wait,
                Err(err) => {
                    tracing::warn!(error = %err, "dispatcher cannot read the outbox; will retry");
                    SAFETY_TICK
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = queued.notified() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
        // Every attempt has sent its result: record them, then stop.
        recorder_stop.cancel();
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
        let _ = counter.await;
    }

    /// Writes finished attempts, all that are waiting at once, then frees their slots and wakes
    /// the dispatcher. Until `stop`, and then what is left.
    async fn record_results(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(AttemptResult, OwnedSemaphorePermit)>,
        stop: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                first = rx.recv() => first,
                () = stop.cancelled() => rx.try_recv().ok(),
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while let Ok(next) = rx.try_recv() {
                batch.push(next);
            }
            let (results, permits): (Vec<AttemptResult>, Vec<OwnedSemaphorePermit>) =
                batch.into_iter().unzip();
            match self.store.finish_deliveries(&results, now_ms()).await {
                Ok(done) => {
                    for (r, recorded) in results.iter().zip(done) {
                        if !recorded {
                            tracing::warn!(delivery = r.claimed.id, "claim expired before the attempt was recorded; it will be sent again");
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, attempts = results.len(), "cannot record attempts; their claims will expire and they will be sent again")
                }
            }
            drop(permits);
            self.wake.notify_one();
        }
    }

    /// Claims as many due deliveries as there are free slots and starts them. Returns how long
    /// to wait before looking again when nothing else wakes the dispatcher.
    pub async fn run_once(
        self: &Arc<Self>,
        tracker: &TaskTracker,
    ) -> Result<Duration, crate::store::StoreError> {
        loop {
            let free = self.slots.available_permits();
            if free == 0 {
                return Ok(SAFETY_TICK);
            }
            let now = now_ms();
            // A read first: claiming is a write, and most wake-ups (every ingest commit) find
            // nothing to claim.
            match self.store.next_delivery_due(now).await? {
                None => return Ok(SAFETY_TICK),
                Some(due) if due > now => {
                    return Ok(Duration::from_millis((due - now) as u64).min(SAFETY_TICK))
                }
                Some(_) => {}
            }
            let lease = now + (self.config.attempt_timeout + LEASE_MARGIN).as_millis() as i64;
            let claimed = self.store.claim_deliveries(now, lease, free as i64).await?;
            if claimed.is_empty() {
                // Due but waiting behind an earlier delivery of the same resource: the end of
                // that attempt wakes the dispatcher.
                return Ok(SAFETY_TICK);
            }
            let full = claimed.len() == free;
            for c in claimed {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    break;
                };
                let this = self.clone();
                tracker.spawn(async move { this.deliver(c, permit).await });
            }
            if !full {
                // Wake for the next retry time; rows already due here are waiting behind an
                // attempt in flight, whose end wakes the dispatcher.
                let now = now_ms();
                return Ok(match self.store.next_delivery_due(now).await? {
                    Some(due) if due > now => {
                        Duration::from_millis((due - now) as u64).min(SAFETY_TICK)
                    }
                    _ => SAFETY_TICK,
                });
            }
        }
    }

    /// One attempt. The slot (`permit`) stays taken until its result is recorded.
    async fn deliver(&self, claimed: Claimed, permit: OwnedSemaphorePermit) {
        let sub = match self
            .store
            .subscriptions(Some(&claimed.subscription_id))
            .await
        {
            Ok(mut subs) => match subs.pop() {
                Some(sub) => sub,
                None => return, // deleted meanwhile, with its deliveries
            },
            Err(err) => {
                tracing::warn!(error = %err, delivery = claimed.id, "cannot load subscription; the claim will expire and be retried");
                return;
            }
        };
        let started_ms = now_ms();
        let started = Instant::now();
        let event = match self.store.delivery_event(claimed.seq).await {
            Ok(Some(event)) => event,
            Ok(None) => {
                let attempt = AttemptRecord {
                    started_ms,
                    status: None,
                    latency_ms: 0,
                    error: Some("the event is no longer stored".into()),
                };
                crate::metrics::delivery("dead", started.elapsed());
                self.record(claimed, attempt, AttemptOutcome::Dead, permit);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, delivery = claimed.id, "cannot load event; the claim will expire and be retried");
                return;
            }
        };
        let body = payload(&event.0, event.1.as_deref());
        let result = self.post(&sub, claimed.seq, &body).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let (status, error, retry_after) = match &result {
            Ok((status, headers)) => (
                Some(i64::from(*status)),
                None,
                retry_after(*status, headers),
            ),
            Err(err) => (None, Some(truncate(&error_chain(err))), None),
        };
        let outcome = match status {
            Some(s) if (200..300).contains(&s) => AttemptOutcome::Delivered,
            Some(410) => AttemptOutcome::Gone,
            _ => {
                let schedule = sub
                    .retry_schedule
                    .as_deref()
                    .unwrap_or(&self.config.retry_schedule);
                let failures = claimed.schedule_pos as usize + 1;
                match next_delay(schedule, failures, retry_after, self.config.max_retry_after) {
                    Some(delay) => AttemptOutcome::Retry {
                        at_ms: now_ms() + delay.as_millis() as i64,
                    },
                    None => AttemptOutcome::Dead,
                }
            }
        };
        let label = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Dead => "dead",
            _ => "failed",
        };
        crate::metrics::delivery(label, started.elapsed());
        if outcome == AttemptOutcome::Dead {
            tracing::warn!(delivery = claimed.id, subscription = %sub.id, seq = claimed.seq, "delivery dead-lettered");
        }
        let error = error.or_else(|| {
            status
                .filter(|s| !(200..300).contains(s))
                .map(|s| format!("HTTP {s}"))
        });
        let attempt = AttemptRecord {
            started_ms,
            status,
            latency_ms,
            error,
        };
        self.record(claimed, attempt, outcome, permit);
    }

    fn record(
        &self,
        claimed: Claimed,
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
        permit: OwnedSemaphorePermit,
    ) {
        let result = AttemptResult {
            claimed,
            attempt,
            outcome,
        };
        // The recorder outlives every attempt (see `run`), so the channel is open.
        let _ = self.results.send((result, permit));
    }

    async fn post(
        &self,
        sub: &Subscription,
        seq: i64,
        body: &[u8],
    ) -> Result<(u16, HeaderMap), reqwest::Error> {
        let msg_id = format!("msg_mkio_relay_{seq}");
        let timestamp = now_ms() / 1000;
        let signature = signatures(sub, &msg_id, timestamp, body);
        let response = self
            .client
            .post(&sub.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await?;
        Ok((response.status().as_u16(), response.headers().clone()))
    }
}

/// Refreshes the outbox gauges until `cancel`. A count is a read, off the delivery path.
async fn count_outbox(store: Arc<dyn Store>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(COUNT_OUTBOX_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.status().await {
            Ok(status) => crate::metrics::outbox(status.pending_deliveries, status.dead_deliveries),
            Err(err) => tracing::debug!(error = %err, "cannot count the outbox; will retry"),
        }
    }
}

/// `v1,<sig>` for the current secret, and for the previous one while its overlap lasts.
fn signatures(sub: &Subscription, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let now = now_ms();
    let previous = sub.previous_secret.as_deref().filter(|_| {
        sub.previous_secret_until_ms
            .is_some_and(|until| until > now)
    });
    [Some(sub.secret.as_str()), previous]
        .into_iter()
        .flatten()
        .filter_map(|s| decode_secret(s).ok())
        .map(|key| sign(&key, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The documented delivery body: the event type, its time, and under `data` the normalized
/// event and the original CloudEvent.
pub fn payload(event: &StoredEvent, raw: Option<&[u8]>) -> Vec<u8> {
    let original = raw
        .and_then(|r| serde_json::from_slice::<Value>(r).ok())
        .filter(|v| v.get("specversion").is_some())
        .unwrap_or_else(|| {
            // Binary-mode deliveries kept only their data: rebuild the envelope.
            json!({"specversion": "1.0", "id": event.id, "type": event.event_type,
                   "source": event.source, "time": event.time, "data": event.data})
        });
    let body = json!({
        "type": event.event_type,
        "timestamp": event.time.clone().unwrap_or_else(|| format_ms(event.event_ms)),
        "data": {"event": views::event(event), "cloudevent": original},
    });
    body.to_string().into_bytes()
}

/// A receiver's Retry-After (seconds or an HTTP date), on 429 and 503 only.
fn retry_after(status: u16, headers: &HeaderMap) -> Option<Duration> {
    if !matches!(status, 429 | 503) {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value)
        .ok()?
        .timestamp_millis();
    Some(Duration::from_millis((at - now_ms()).max(0) as u64))
}

fn error_chain(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn truncate(text: &str) -> String {
    text.chars().take(ERROR_TEXT_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_only_on_429_and_503() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(429, &h), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(503, &h), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(500, &h), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(429, &h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(429, &h), None);
    }
}
