//! `/v1/subscriptions` (outbound webhooks: create, list, change, delete), their deliveries,
//! manual retry and replay.

use super::api::ApiState;
use super::error::ApiError;
use super::extract::{body, ApiPath, ApiQuery};
use super::openapi::{
    DeliveryPage, ErrorBody, ReplayAccepted, RetryAccepted, Subscription as SubscriptionView,
    SubscriptionList,
};
use crate::domain::subscription::Filter;
use crate::domain::time::{format_ms, now_ms, parse_rfc3339_ms};
use crate::fanout::subscriptions::{self, NewSubscription, Patch, SubscriptionError};
use crate::store::outbox::{DeliveryRow, ReplayRange, Subscription};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Invalid(m) => ApiError::bad_request("invalid_subscription", m),
            SubscriptionError::NotFound(id) => ApiError::not_found(format!("no subscription {id}")),
            e @ SubscriptionError::FromConfig(_) => {
                ApiError::new(StatusCode::CONFLICT, "declared_in_config", e.to_string())
            }
            SubscriptionError::Store(e) => e.into(),
        }
    }
}

/// A subscription as the API shows it. The secret appears only when `secret` is given (at
/// creation and rotation).
fn view(sub: &Subscription, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": sub.id,
        "url": sub.url,
        "filter": sub.filter,
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "retry_schedule": sub.retry_schedule.as_ref().map(|s| {
            s.iter().map(|d| humantime::format_duration(*d).to_string()).collect::<Vec<_>>()
        }),
        "origin": sub.origin,
        "previous_secret_valid_until": sub.previous_secret_until_ms.map(format_ms),
        "created_at": format_ms(sub.created_ms),
        "updated_at": format_ms(sub.updated_ms),
    });
    if let Some(secret) = secret {
        v["secret"] = json!(secret);
    }
    v
}

/// A new subscription; only `url` is required.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateSubscription)]
pub struct CreateBody {
    /// http or https.
    url: String,
    #[serde(default)]
    #[schema(value_type = Option<super::openapi::SubscriptionFilter>)]
    filter: Filter,
    #[serde(default = "yes")]
    #[schema(default = true)]
    enabled: bool,
    /// Delays such as `["1s", "10s", "1m"]`; overrides `delivery.retry_schedule`.
    retry_schedule: Option<Vec<String>>,
    /// `whsec_` + base64; generated when absent.
    secret: Option<String>,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    operation_id = "create_subscription",
    tag = "subscriptions",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created; the only answer besides a rotation that shows `secret`", body = SubscriptionView),
        (status = 400, description = "`invalid_body` or `invalid_subscription`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<Arc<ApiState>>,
    request: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body(request)?;
    let retry_schedule = b
        .retry_schedule
        .as_deref()
        .map(subscriptions::parse_schedule)
        .transpose()
        .map_err(|m| ApiError::bad_request("invalid_subscription", m))?;
    let sub = subscriptions::create(
        s.store.as_ref(),
        NewSubscription {
            url: b.url,
            filter: b.filter,
            enabled: b.enabled,
            retry_schedule,
            secret: b.secret,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&sub, Some(&sub.secret)))))
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    operation_id = "list_subscriptions",
    tag = "subscriptions",
    responses(
        (status = 200, description = "Every subscription, without secrets", body = SubscriptionList),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn list(State(s): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let subs = s.store.subscriptions(None).await?;
    Ok(Json(json!({
        "subscriptions": subs.iter().map(|s| view(s, None)).collect::<Vec<_>>()
    })))
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}",
    operation_id = "get_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription, without its secret", body = SubscriptionView),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(
        &subscriptions::get(s.store.as_ref(), &id).await?,
        None,
    )))
}

/// Changes to a subscription; absent fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateSubscription)]
pub struct PatchBody {
    url: Option<String>,
    #[schema(value_type = Option<super::openapi::SubscriptionFilter>)]
    filter: Option<Filter>,
    /// `true` also clears `disabled_reason`.
    enabled: Option<bool>,
    /// `null` returns to the default schedule; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    retry_schedule: Option<Option<Vec<String>>>,
    /// Generate a new secret (shown in the answer); the old one signs too until
    /// `previous_secret_valid_until`.
    #[serde(default)]
    rotate_secret: bool,
}

/// Distinguishes a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Vec<String>>>, D::Error> {
    Option::<Vec<String>>::deserialize(d).map(Some)
}

#[utoipa::path(
    patch,
    path = "/v1/subscriptions/{id}",
    operation_id = "update_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The changed subscription (with `secret` after a rotation)", body = SubscriptionView),
        (status = 400, description = "`invalid_body` or `invalid_subscription`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "Declared in the configuration (`declared_in_config`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn update(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
    request: Result<Json<PatchBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(request)?;
    let retry_schedule = match b.retry_schedule {
        None => None,
        Some(None) => Some(None),
        Some(Some(list)) => {
            Some(Some(subscriptions::parse_schedule(&list).map_err(|m| {
                ApiError::bad_request("invalid_subscription", m)
            })?))
        }
    };
    let patch = Patch {
        url: b.url,
        filter: b.filter,
        enabled: b.enabled,
        retry_schedule,
        rotate_secret: b.rotate_secret,
    };
    let sub = subscriptions::update(s.store.as_ref(), &id, patch, s.rotation_overlap).await?;
    Ok(Json(view(
        &sub,
        b.rotate_secret.then_some(sub.secret.as_str()),
    )))
}

#[utoipa::path(
    delete,
    path = "/v1/subscriptions/{id}",
    operation_id = "delete_subscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted, with its deliveries"),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "Declared in the configuration (`declared_in_config`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    subscriptions::delete(s.store.as_ref(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn delivery_view(d: &DeliveryRow) -> Value {
    json!({
        "id": d.id,
        "subscription_id": d.subscription_id,
        "seq": d.seq,
        "resource": d.resource,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": (d.state == "pending").then(|| format_ms(d.next_attempt_ms)),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": format_ms(d.created_ms),
        "updated_at": format_ms(d.updated_ms),
        "attempt_log": d.attempt_log.iter().map(|a| json!({
            "attempt": a.attempt,
            "at": format_ms(a.started_ms),
            "status": a.status,
            "latency_ms": a.latency_ms,
            "error": a.error,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesParams {
    /// `pending`, `delivered` or `dead`.
    state: Option<String>,
    /// A delivery id: the page starts after it.
    after: Option<i64>,
    /// Page size, 1 to `api.max_page_size`.
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/deliveries",
    operation_id = "list_deliveries",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), DeliveriesParams),
    responses(
        (status = 200, description = "Deliveries oldest first, with their attempts", body = DeliveryPage),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeliveriesParams>,
) -> Result<Json<Value>, ApiError> {
    if let Some(state) = p.state.as_deref() {
        if !matches!(state, "pending" | "delivered" | "dead") {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`state` is one of pending, delivered, dead",
            ));
        }
    }
    subscriptions::get(s.store.as_ref(), &id).await?;
    let limit = s.page_size(p.limit)?;
    let rows = s
        .store
        .deliveries(
            &id,
            p.state.as_deref(),
            p.after.unwrap_or(0),
            i64::from(limit),
        )
        .await?;
    let next_after = rows.last().map(|d| d.id);
    Ok(Json(json!({
        "deliveries": rows.iter().map(delivery_view).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    operation_id = "retry_delivery",
    tag = "subscriptions",
    params(("id" = i64, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Queued again now, with a fresh schedule", body = RetryAccepted),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn retry(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !s.store.retry_delivery(id, now_ms()).await? {
        return Err(ApiError::not_found(format!("no delivery {id}")));
    }
    s.dispatcher_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "pending"})),
    ))
}

/// Which stored events to deliver again; at least one of the two.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Replay)]
pub struct ReplayBody {
    /// Events after this sequence number.
    after_seq: Option<i64>,
    /// Events whose time is at or after this RFC 3339 time.
    since: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/replay",
    operation_id = "replay_events",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = ReplayBody,
    responses(
        (status = 202, description = "Deliveries queued for every matching event in the range", body = ReplayAccepted),
        (status = 400, description = "`invalid_body`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn replay(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
    request: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body(request)?;
    if b.after_seq.is_none() && b.since.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "give `after_seq` (a sequence number) or `since` (an RFC 3339 time), or both",
        ));
    }
    let since_ms = b
        .since
        .as_deref()
        .map(|t| {
            parse_rfc3339_ms(t).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("`since` is not an RFC 3339 time: {t:?}"),
                )
            })
        })
        .transpose()?;
    let sub = subscriptions::get(s.store.as_ref(), &id).await?;
    let range = ReplayRange {
        after_seq: b.after_seq.unwrap_or(0).max(0),
        since_ms,
    };
    let queued = s.store.replay(&sub, &range, now_ms()).await?;
    s.dispatcher_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"subscription_id": id, "queued": queued})),
    ))
}
