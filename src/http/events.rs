//! `/v1/events` (a page of the log, optionally long-polled) and `/v1/events/stream` (SSE,
//! resumable from `Last-Event-ID` or `?after=`).

use super::api::{parse_kind, ApiState};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::openapi::{ErrorBody, EventPage};
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// The sequence number to start after (default 0).
    after: Option<i64>,
    /// Page size, 1 to `api.max_page_size` (default `api.default_page_size`).
    limit: Option<u32>,
    /// Long-poll: hold the request until a matching event exists, at most this long (`30s`,
    /// `2m` or seconds; capped at `api.max_wait`).
    wait: Option<String>,
    /// Exact event type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Project name.
    project: Option<String>,
    /// Event kind (`job`, `live_channel`, ..., `unknown`).
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
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "list_events",
    tag = "events",
    params(EventsParams),
    responses(
        (status = 200, description = "Events oldest first", body = EventPage),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
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
            let _waiting = crate::metrics::Connected::waiter();
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Start after this sequence number (`0`: the whole log) when there is no `Last-Event-ID`;
    /// absent: from now.
    after: Option<i64>,
    /// Exact event type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Project name.
    project: Option<String>,
    /// Event kind.
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
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    operation_id = "stream_events",
    tag = "events",
    params(
        StreamParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this sequence number"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `id` is the sequence number, `event` the type, `data` the event JSON", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
    )
)]
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
    // Lives in the stream's state: the gauge drops when the client goes or the stream ends.
    let client = crate::metrics::Connected::sse_client();
    let events = stream::unfold(
        (
            follower,
            VecDeque::<Arc<StoredEvent>>::new(),
            shutdown,
            client,
        ),
        |(mut follower, mut pending, shutdown, client)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok(sse_event(&e)), (follower, pending, shutdown, client)));
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
