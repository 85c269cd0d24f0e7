//! Subscriptions as a service: validation, secrets (generated, shown once, rotated with an
//! overlap), creation and changes through the API, and the ones declared in configuration.

use crate::config::SubscriptionConfig;
use crate::domain::resource::ResourceKind;
use crate::domain::subscription::Filter;
use crate::domain::time::now_ms;
use crate::ingest::signature::SECRET_PREFIX;
use crate::store::outbox::Subscription;
use crate::store::{Store, StoreError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use std::time::Duration;

/// Bytes of key in a generated secret (Standard Webhooks asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// Why a subscription request was refused. Messages name the field.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{0}")]
    Invalid(String),
    #[error("no subscription {0}")]
    NotFound(String),
    #[error("subscription {0} is declared in the configuration; change it there")]
    FromConfig(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Only http and https URLs with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`url` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err("`url` must be an http:// or https:// URL with a host".into());
    }
    Ok(())
}

/// Kinds must be ones mkio-relay knows.
pub fn check_filter(filter: &Filter) -> Result<(), String> {
    for kind in &filter.kinds {
        kind.parse::<ResourceKind>()
            .map_err(|e| format!("`filter.kinds`: {e}"))?;
    }
    Ok(())
}

/// Parses a retry schedule written as durations (`["1s", "2m"]`).
pub fn parse_schedule(schedule: &[String]) -> Result<Vec<Duration>, String> {
    schedule
        .iter()
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|_| format!("`retry_schedule`: {s:?} is not a duration such as 30s"))
        })
        .collect()
}

/// A new random `whsec_` secret.
pub fn generate_secret() -> String {
    let mut key = [0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

fn generate_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sub_{hex}")
}

/// What a client asks for when creating a subscription.
pub struct NewSubscription {
    pub url: String,
    pub filter: Filter,
    pub enabled: bool,
    pub retry_schedule: Option<Vec<Duration>>,
    pub secret: Option<String>,
}

/// Creates a subscription; the returned row holds the secret, to show once.
pub async fn create(
    store: &dyn Store,
    new: NewSubscription,
) -> Result<Subscription, SubscriptionError> {
    check_url(&new.url).map_err(SubscriptionError::Invalid)?;
    check_filter(&new.filter).map_err(SubscriptionError::Invalid)?;
    let secret = match new.secret {
        Some(s) => {
            crate::ingest::signature::decode_secret(&s)
                .map_err(|e| SubscriptionError::Invalid(format!("`secret`: {e}")))?;
            s
        }
        None => generate_secret(),
    };
    let now = now_ms();
    let sub = Subscription {
        id: generate_id(),
        url: new.url,
        filter: new.filter,
        enabled: new.enabled,
        retry_schedule: new.retry_schedule,
        secret,
        previous_secret: None,
        previous_secret_until_ms: None,
        disabled_reason: None,
        origin: "api".into(),
        created_ms: now,
        updated_ms: now,
    };
    store.put_subscription(&sub).await?;
    Ok(sub)
}

/// A change to a subscription; `None` leaves a field as it is.
#[derive(Default)]
pub struct Patch {
    pub url: Option<String>,
    pub filter: Option<Filter>,
    pub enabled: Option<bool>,
    /// `Some(None)` returns to the default schedule.
    pub retry_schedule: Option<Option<Vec<Duration>>>,
    pub rotate_secret: bool,
}

/// Loads one subscription, or `NotFound`.
pub async fn get(store: &dyn Store, id: &str) -> Result<Subscription, SubscriptionError> {
    store
        .subscriptions(Some(id))
        .await?
        .pop()
        .ok_or_else(|| SubscriptionError::NotFound(id.to_owned()))
}

/// Applies a patch. Rotation makes a new secret and keeps the old one signing for `overlap`.
pub async fn update(
    store: &dyn Store,
    id: &str,
    patch: Patch,
    overlap: Duration,
) -> Result<Subscription, SubscriptionError> {
    let mut sub = get(store, id).await?;
    if sub.origin == "config" {
        return Err(SubscriptionError::FromConfig(id.to_owned()));
    }
    if let Some(url) = patch.url {
        check_url(&url).map_err(SubscriptionError::Invalid)?;
        sub.url = url;
    }
    if let Some(filter) = patch.filter {
        check_filter(&filter).map_err(SubscriptionError::Invalid)?;
        sub.filter = filter;
    }
    if let Some(enabled) = patch.enabled {
        sub.enabled = enabled;
        if enabled {
            sub.disabled_reason = None;
        }
    }
    if let Some(schedule) = patch.retry_schedule {
        sub.retry_schedule = schedule;
    }
    let now = now_ms();
    if patch.rotate_secret {
        sub.previous_secret = Some(std::mem::replace(&mut sub.secret, generate_secret()));
        sub.previous_secret_until_ms = Some(now + overlap.as_millis() as i64);
    }
    sub.updated_ms = now;
    store.put_subscription(&sub).await?;
    Ok(sub)
}

pub async fn delete(store: &dyn Store, id: &str) -> Result<(), SubscriptionError> {
    let sub = get(store, id).await?;
    if sub.origin == "config" {
        return Err(SubscriptionError::FromConfig(id.to_owned()));
    }
    store.delete_subscription(id).await?;
    Ok(())
}

/// Makes the stored configuration subscriptions match the configuration: declared ones are
/// created or updated; ones no longer declared are disabled (their deliveries kept).
pub async fn sync_config(
    store: &dyn Store,
    declared: &[SubscriptionConfig],
) -> Result<(), StoreError> {
    let now = now_ms();
    let existing = store.subscriptions(None).await?;
    for c in declared {
        let previous = existing.iter().find(|s| s.id == c.id);
        if previous.is_some_and(|p| p.origin != "config") {
            tracing::warn!(id = %c.id, "a configured subscription replaces an API one with the same id");
        }
        let sub = Subscription {
            id: c.id.clone(),
            url: c.url.clone(),
            filter: c.filter(),
            enabled: c.enabled,
            retry_schedule: c.retry_schedule.clone(),
            secret: c.secret.expose().to_owned(),
            previous_secret: None,
            previous_secret_until_ms: None,
            disabled_reason: None,
            origin: "config".into(),
            created_ms: previous.map_or(now, |p| p.created_ms),
            updated_ms: now,
        };
        store.put_subscription(&sub).await?;
    }
    for old in existing
        .iter()
        .filter(|s| s.origin == "config" && s.enabled)
    {
        if !declared.iter().any(|c| c.id == old.id) {
            let mut sub = old.clone();
            sub.enabled = false;
            sub.disabled_reason = Some("no longer declared in the configuration".into());
            sub.updated_ms = now;
            store.put_subscription(&sub).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_filters_are_checked() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_filter(&Filter {
            kinds: vec!["job".into()],
            ..Filter::default()
        })
        .is_ok());
        assert!(check_filter(&Filter {
            kinds: vec!["jobs".into()],
            ..Filter::default()
        })
        .is_err());
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes() {
        let s = generate_secret();
        assert_eq!(
            crate::ingest::signature::decode_secret(&s).unwrap().len(),
            32
        );
        assert_ne!(s, generate_secret());
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(
            parse_schedule(&["1s".into(), "2m".into()]).unwrap(),
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert!(parse_schedule(&["soon".into()]).is_err());
    }
}
