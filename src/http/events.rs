//! `/v1/events` (a page of the log, optionally long-polled) and `/v1/events/stream` (SSE,
//! resumable from `Last-Event-ID` or `?after=`).

use super::api::{parse_kind, ApiState};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::views;
use crate::fanout::follower::Follower;
use crate::store::{EventQuery, StoredEvent};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::time::Instant;

/// Events per SSE read from the store while a client catches up.
const STREAM_PAGE: u32 = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    after: Option<i64>,
    limit: Option<u32>,
    wait: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    project: Option<String>,
    kind: Option<String>,
}

fn query(after: i64, limit: u32, p: EventsParams) -> Result<EventQuery, ApiError> {
    if after < 0 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`after` must not be negative",
        ));
    }
    Ok(EventQuery {
        after,
        limit,
        event_type: p.event_type,
        project: p.project,
        kind: p.kind.as_deref().map(parse_kind).transpose()?,
    })
}

/// A page of events after `after`; with `wait`, held open until one exists.
pub async fn list(
    State(s): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<EventsParams>,
) -> Result<Json<Value>, ApiError> {
    let wait = s.wait(p.wait.as_deref())?;
    let limit = s.page_size(p.limit)?;
    let query = query(p.after.unwrap_or(0), limit, p)?;
    let (events, next_after) = match wait {
        None => {
            let events: Vec<Arc<StoredEvent>> = s
                .store
                .events(&query)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect();
            let next = events.last().map_or(query.after, |e| e.seq);
            (events, next)
        }
        Some(wait) => {
            let mut follower = Follower::new(s.store.clone(), &s.feed, query);
            let deadline = Instant::now() + wait;
            let events = tokio::select! {
                r = follower.next(Some(deadline)) => r?,
                () = s.shutdown.cancelled() => Vec::new(),
            };
            (events, follower.position())
        }
    };
    Ok(Json(json!({
        "events": events.iter().map(|e| views::event(e)).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    after: Option<i64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    project: Option<String>,
    kind: Option<String>,
}

fn sse_event(e: &StoredEvent) -> Event {
    let event = Event::default()
        .id(e.seq.to_string())
        .data(views::event(e).to_string());
    // Ingest refuses control characters in `type`; rows from elsewhere fall back to "message".
    if e.event_type.chars().any(char::is_control) {
        event
    } else {
        event.event(&e.event_type)
    }
}

/// Server-sent events from `Last-Event-ID` (a reconnect), else `?after=`, else from now.
pub async fn stream(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_last_event_id",
                        "`Last-Event-ID` must be a sequence number",
                    )
                })
        })
        .transpose()?;
    let after = match last_event_id.or(p.after) {
        Some(after) => after,
        None => *s.feed.head().borrow(),
    };
    let params = EventsParams {
        after: None,
        limit: None,
        wait: None,
        event_type: p.event_type,
        project: p.project,
        kind: p.kind,
    };
    let follower = Follower::new(s.store.clone(), &s.feed, query(after, STREAM_PAGE, params)?);
    let shutdown = s.shutdown.clone();
    let events = stream::unfold(
        (follower, VecDeque::<Arc<StoredEvent>>::new(), shutdown),
        |(mut follower, mut pending, shutdown)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok(sse_event(&e)), (follower, pending, shutdown)));
                }
                let batch = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    batch = follower.next(None) => batch,
                };
                match batch {
                    Ok(batch) if batch.is_empty() => return None,
                    Ok(batch) => pending.extend(batch),
                    Err(err) => {
                        // The client reconnects with Last-Event-ID and resumes where it was.
                        tracing::warn!(error = %err, "event stream ends: store unreadable");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(s.keepalive)))
}
