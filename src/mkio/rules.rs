//! The relay's webhook rule in each MK.IO project: the settings it needs, create-or-replace,
//! read, and its delivery history (MKIO.md B). The CLI prints these; the poller's reconcile
//! task reads the history.

use super::client::MkioClient;
use super::error::MkioError;
use super::list::ListQuery;
use crate::config::{env_name, Config, MkioConfig, Secret};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A path segment keeps only RFC 3986 unreserved characters unencoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What `rules apply` registers: from `mkio.rule_*` and the first of `webhook.secrets`.
#[derive(Clone, Debug)]
pub struct RuleSettings {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Secret,
}

impl RuleSettings {
    /// The settings, or an error naming the missing setting and its environment variable.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let m = &config.mkio;
        if m.rule_url.is_empty() {
            anyhow::bail!(
                "mkio.rule_url ({}) is not set: give the public URL of this relay's ingest \
                 endpoint, for example https://relay.example.com/webhooks/mkio",
                env_name("mkio.rule_url")
            );
        }
        if m.rule_events.is_empty() {
            anyhow::bail!(
                "mkio.rule_events ({}) is empty: the rule must subscribe to at least one event type",
                env_name("mkio.rule_events")
            );
        }
        let Some(secret) = config.webhook.secrets.first() else {
            anyhow::bail!(
                "webhook.secrets ({}) is empty: the rule authenticates with the first secret",
                env_name("webhook.secrets")
            );
        };
        Ok(Self {
            name: m.rule_name.clone(),
            url: m.rule_url.clone(),
            events: m.rule_events.clone(),
            secret: secret.clone(),
        })
    }

    /// The whole rule, as PUT replaces it: `{"spec": {...}}`.
    pub fn body(&self) -> Value {
        json!({ "spec": {
            "url": self.url,
            "enabled": true,
            "events": self.events,
            "authentication": {
                "headers": { "Authorization": format!("Bearer {}", self.secret.expose()) },
                "queryParams": {},
            },
        }})
    }
}

/// The projects a rules command acts on: `only` if given, else `mkio.projects`; checks that a
/// token is set first.
pub fn projects(m: &MkioConfig, only: Option<&str>) -> anyhow::Result<Vec<String>> {
    if m.token.is_empty() {
        anyhow::bail!(
            "mkio.token ({}) is not set: the rules commands call MK.IO with it",
            env_name("mkio.token")
        );
    }
    match only {
        Some(p) if p.trim().is_empty() => anyhow::bail!("--project must not be empty"),
        Some(p) => Ok(vec![p.trim().to_owned()]),
        None if m.projects.is_empty() => anyhow::bail!(
            "mkio.projects ({}) is empty: name the projects (comma-separated) or pass --project",
            env_name("mkio.projects")
        ),
        None => Ok(m.projects.clone()),
    }
}

/// `/api/v1/projects/{project}/webhook/rules/{rule}`, segments percent-encoded.
pub fn rule_path(project: &str, rule_name: &str) -> String {
    format!(
        "/api/v1/projects/{}/webhook/rules/{}",
        utf8_percent_encode(project, SEGMENT),
        utf8_percent_encode(rule_name, SEGMENT)
    )
}

/// What a PUT of the rule did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// 201: the rule did not exist.
    Created,
    /// 200: the rule existed and was replaced whole.
    Replaced,
    /// Another 2xx (202 accepted, ...).
    Other(u16),
}

/// Creates or replaces the rule in `project`, sending the whole spec.
pub async fn apply(
    client: &MkioClient,
    project: &str,
    settings: &RuleSettings,
) -> Result<Applied, MkioError> {
    let path = rule_path(project, &settings.name);
    let (status, _) = client.put(&path, &settings.body()).await?;
    Ok(match status {
        201 => Applied::Created,
        200 => Applied::Replaced,
        other => Applied::Other(other),
    })
}

/// The rule as MK.IO returns it (secrets masked by MK.IO), or `None` when it does not exist.
pub async fn show(
    client: &MkioClient,
    project: &str,
    rule_name: &str,
) -> Result<Option<Value>, MkioError> {
    match client.get(&rule_path(project, rule_name)).await {
        Ok(rule) => Ok(Some(rule)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One delivery the rule made or attempted. Entries carry no event id and no payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistoryEntry {
    pub created: String,
    pub source: String,
    pub r#type: String,
    /// `Pending`, `Retrying`, `Failed` or `Sent`.
    pub status: String,
}

impl HistoryEntry {
    /// Reads an entry leniently: a missing or non-string field becomes text or empty.
    pub fn from_value(v: &Value) -> Self {
        let field = |name: &str| match v.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        Self {
            created: field("created"),
            source: field("source"),
            r#type: field("type"),
            status: field("status"),
        }
    }
}

/// Up to `limit` entries of the rule's delivery history, in MK.IO's order, following next
/// links as far as needed.
pub async fn history(
    client: &MkioClient,
    project: &str,
    rule_name: &str,
    limit: usize,
) -> Result<Vec<HistoryEntry>, MkioError> {
    let path = format!("{}/events", rule_path(project, rule_name));
    let items = client
        .list_up_to(&path, &ListQuery::default(), limit)
        .await?;
    Ok(items.iter().map(HistoryEntry::from_value).collect())
}

/// Entries per status, for the summary line.
pub fn count_by_status(entries: &[HistoryEntry]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in entries {
        *counts.entry(e.status.clone()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_entries_are_read_leniently() {
        let e = HistoryEntry::from_value(&json!({
            "created": "2025-03-14T09:09:48Z", "source": "/api/v1/projects/p/x",
            "type": "MediaKind.JobFinished", "status": "Failed", "extra": 1
        }));
        assert_eq!(e.status, "Failed");
        assert_eq!(e.r#type, "MediaKind.JobFinished");
        let odd = HistoryEntry::from_value(&json!({"created": 17, "status": null}));
        assert_eq!(odd.created, "17");
        assert_eq!(odd.status, "");
        let counts = count_by_status(&[e.clone(), e, odd]);
        assert_eq!(counts.get("Failed"), Some(&2));
        assert_eq!(counts.get(""), Some(&1));
    }

    #[test]
    fn rule_paths_encode_their_segments() {
        assert_eq!(
            rule_path("studio-prod", "mkio-relay"),
            "/api/v1/projects/studio-prod/webhook/rules/mkio-relay"
        );
        assert_eq!(
            rule_path("a b", "r/1"),
            "/api/v1/projects/a%20b/webhook/rules/r%2F1"
        );
    }
}
