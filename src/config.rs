//! Typed configuration: embedded defaults -> optional file -> `MKIO_RELAY_*` environment,
//! validated once at start-up with errors that name the setting.

use crate::store::Backend;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The embedded defaults, also the documentation of every setting.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The environment prefix; `MKIO_RELAY_SECTION_KEY` sets `section.key`.
pub const ENV_PREFIX: &str = "MKIO_RELAY_";

/// A secret value: compared in constant time, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(string_like(d)?))
    }
}

/// Standard Webhooks signature checking on ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureMode {
    Off,
    IfPresent,
    Required,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub subscriptions: Vec<SubscriptionConfig>,
    pub database: DatabaseConfig,
    pub ingest: IngestConfig,
    pub webhook: WebhookConfig,
    pub api: ApiConfig,
    pub delivery: DeliveryConfig,
    pub mkio: MkioConfig,
    pub poll: PollConfig,
    pub retention: RetentionConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// Graceful shutdown on SIGTERM/SIGINT.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
}

/// The MK.IO API: where it is, the token, the projects this relay manages, the request budget,
/// and the webhook rule `mkio-relay rules apply` registers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkioConfig {
    #[serde(deserialize_with = "string_like")]
    pub base_url: String,
    pub token: Secret,
    #[serde(deserialize_with = "string_list")]
    pub projects: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    pub get_limit_per_minute: u32,
    pub write_limit_per_minute: u32,
    pub budget_fraction: f64,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub token_expiry_warning: Duration,
    #[serde(deserialize_with = "string_like")]
    pub rule_name: String,
    #[serde(deserialize_with = "string_like")]
    pub rule_url: String,
    #[serde(deserialize_with = "string_list")]
    pub rule_events: Vec<String>,
}

impl MkioConfig {
    /// Whether the relay may call MK.IO at all (a token and at least one project).
    pub fn is_configured(&self) -> bool {
        !self.token.is_empty() && !self.projects.is_empty()
    }

    /// Requests per minute allowed per scope: `fraction` of the published limits, never above.
    pub fn budget(&self) -> (u32, u32) {
        let f = self.budget_fraction.clamp(0.0, 1.0);
        let get = ((self.get_limit_per_minute as f64) * f).floor().max(1.0) as u32;
        let write = ((self.write_limit_per_minute as f64) * f).floor().max(1.0) as u32;
        (get, write)
    }
}

/// Polling of what webhooks do not cover, and reconciliation of lost webhooks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "string_list")]
    pub kinds: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub discovery_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub fast_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub slow_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub job_safety_net_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub job_max_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub reconcile_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
}

/// How long event payloads and delivery attempts are kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(deserialize_with = "duration")]
    pub payloads: Duration,
    #[serde(deserialize_with = "duration")]
    pub dedupe: Duration,
    #[serde(deserialize_with = "duration")]
    pub deliveries: Duration,
    pub batch_size: u32,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub attempt_timeout: Duration,
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    #[serde(deserialize_with = "duration")]
    pub max_retry_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub secret_rotation_overlap: Duration,
}

/// A subscription declared in configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    #[serde(deserialize_with = "string_like")]
    pub id: String,
    #[serde(deserialize_with = "string_like")]
    pub url: String,
    pub secret: Secret,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "optional_durations")]
    pub retry_schedule: Option<Vec<Duration>>,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub states: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(deserialize_with = "string_like")]
    pub url: String,
    pub max_connections: u32,
    #[serde(deserialize_with = "duration")]
    pub busy_timeout: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    pub body_limit: usize,
    pub batch_max_events: usize,
    pub queue_capacity: usize,
    #[serde(deserialize_with = "duration")]
    pub retry_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(deserialize_with = "list")]
    pub secrets: Vec<Secret>,
    #[serde(deserialize_with = "string_like")]
    pub query_param: String,
    pub allow_unauthenticated: bool,
    pub signature_mode: SignatureMode,
    #[serde(deserialize_with = "list")]
    pub signature_secrets: Vec<Secret>,
    #[serde(deserialize_with = "duration")]
    pub signature_tolerance: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token: Secret,
    pub default_page_size: u32,
    pub max_page_size: u32,
    #[serde(deserialize_with = "duration")]
    pub max_wait: Duration,
    #[serde(deserialize_with = "duration")]
    pub stream_keepalive: Duration,
    pub stream_buffer: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    #[serde(deserialize_with = "string_like")]
    pub level: String,
}

impl SubscriptionConfig {
    pub fn filter(&self) -> crate::domain::subscription::Filter {
        crate::domain::subscription::Filter {
            types: self.types.clone(),
            projects: self.projects.clone(),
            kinds: self.kinds.clone(),
            states: self.states.clone(),
        }
    }
}

/// A configuration problem, naming the setting (and its environment variable).
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn setting(key: &str, problem: impl fmt::Display) -> Self {
        Self(format!("{key} ({}): {problem}", env_name(key)))
    }
}

/// The environment variable that sets `section.key`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

impl Config {
    /// Loads defaults, then `file` if given, then the process environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX))
    }

    /// Like [`Config::load`] with the environment given as `(name, value)` pairs (for tests).
    pub fn load_with_env(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut figment = base_figment(file)?;
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some(key) = env_key(rest) else { continue };
            // The same parsing Env applies to real variables (infallible).
            let parsed: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
            figment = figment.merge(figment::providers::Serialized::default(&key, parsed));
        }
        finish(figment)
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let env = env.filter_map(|k| env_key(k.as_str()).map(Into::into));
        finish(base_figment(file)?.merge(env))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if Backend::of_url(&self.database.url).is_none() {
            return Err(ConfigError::setting(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database.url.starts_with("sqlite:") && self.database.url.contains(":memory:") {
            return Err(ConfigError::setting(
                "database.url",
                "an in-memory SQLite database would lose every event; give a file path",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::setting(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("ingest.body_limit", self.ingest.body_limit),
            ("ingest.batch_max_events", self.ingest.batch_max_events),
            ("ingest.queue_capacity", self.ingest.queue_capacity),
        ] {
            if value == 0 {
                return Err(ConfigError::setting(key, "must be at least 1"));
            }
        }
        if self.webhook.secrets.iter().any(Secret::is_empty) {
            return Err(ConfigError::setting(
                "webhook.secrets",
                "contains an empty secret",
            ));
        }
        if self.webhook.signature_mode != SignatureMode::Off {
            if self.webhook.signature_secrets.is_empty() {
                return Err(ConfigError::setting(
                    "webhook.signature_secrets",
                    "must name at least one whsec_ secret when signature_mode is not off",
                ));
            }
            for secret in &self.webhook.signature_secrets {
                crate::ingest::signature::decode_secret(secret.expose())
                    .map_err(|e| ConfigError::setting("webhook.signature_secrets", e))?;
            }
        }
        let authenticated = !self.webhook.secrets.is_empty()
            || self.webhook.signature_mode == SignatureMode::Required;
        if !authenticated && !self.webhook.allow_unauthenticated {
            return Err(ConfigError::setting(
                "webhook.secrets",
                "no webhook secret is set; set one (or webhook.allow_unauthenticated = true for a \
                 local trial)",
            ));
        }
        if self.api.default_page_size == 0 || self.api.default_page_size > self.api.max_page_size {
            return Err(ConfigError::setting(
                "api.default_page_size",
                "must be between 1 and api.max_page_size",
            ));
        }
        if self.api.stream_keepalive.is_zero() {
            return Err(ConfigError::setting(
                "api.stream_keepalive",
                "must be above zero",
            ));
        }
        if self.api.stream_buffer == 0 {
            return Err(ConfigError::setting(
                "api.stream_buffer",
                "must be at least 1",
            ));
        }
        if self.delivery.concurrency == 0 {
            return Err(ConfigError::setting(
                "delivery.concurrency",
                "must be at least 1",
            ));
        }
        if self.delivery.attempt_timeout.is_zero() {
            return Err(ConfigError::setting(
                "delivery.attempt_timeout",
                "must be above zero",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for sub in &self.subscriptions {
            let problem = crate::fanout::subscriptions::check_url(&sub.url)
                .err()
                .or_else(|| crate::ingest::signature::decode_secret(sub.secret.expose()).err())
                .or_else(|| (!ids.insert(sub.id.as_str())).then(|| "duplicate id".to_owned()))
                .or_else(|| crate::fanout::subscriptions::check_filter(&sub.filter()).err());
            if let Some(problem) = problem {
                return Err(ConfigError(format!(
                    "subscriptions (id {:?}): {problem}",
                    sub.id
                )));
            }
        }
        self.validate_mkio()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::setting("log.level", e))?;
        Ok(())
    }

    fn validate_mkio(&self) -> Result<(), ConfigError> {
        let m = &self.mkio;
        let base = url::Url::parse(&m.base_url)
            .map_err(|e| ConfigError::setting("mkio.base_url", format!("not a URL ({e})")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ConfigError::setting(
                "mkio.base_url",
                "must be an http or https URL",
            ));
        }
        if !(m.budget_fraction > 0.0 && m.budget_fraction <= 1.0) {
            return Err(ConfigError::setting(
                "mkio.budget_fraction",
                "must be above 0 and at most 1 (a fraction of MK.IO's published limits)",
            ));
        }
        if m.get_limit_per_minute == 0 || m.get_limit_per_minute > 2000 {
            return Err(ConfigError::setting(
                "mkio.get_limit_per_minute",
                "must be between 1 and MK.IO's published 2000",
            ));
        }
        if m.write_limit_per_minute == 0 || m.write_limit_per_minute > 1000 {
            return Err(ConfigError::setting(
                "mkio.write_limit_per_minute",
                "must be between 1 and MK.IO's published 1000",
            ));
        }
        if m.request_timeout.is_zero() {
            return Err(ConfigError::setting(
                "mkio.request_timeout",
                "must be above zero",
            ));
        }
        if !m.rule_url.is_empty() {
            let url = url::Url::parse(&m.rule_url)
                .map_err(|e| ConfigError::setting("mkio.rule_url", format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::setting(
                    "mkio.rule_url",
                    "must be an http or https URL",
                ));
            }
        }
        if m.rule_name.is_empty() {
            return Err(ConfigError::setting("mkio.rule_name", "must not be empty"));
        }
        for kind in &self.poll.kinds {
            let known = crate::poller::DISCOVERABLE;
            if !known.iter().any(|k| k.as_str() == kind) {
                let names: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
                return Err(ConfigError::setting(
                    "poll.kinds",
                    format!(
                        "{kind:?} cannot be discovered; use any of {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        let p = &self.poll;
        for (key, value) in [
            ("poll.discovery_interval", p.discovery_interval),
            ("poll.fast_interval", p.fast_interval),
            ("poll.slow_interval", p.slow_interval),
            ("poll.job_safety_net_age", p.job_safety_net_age),
            ("poll.job_max_interval", p.job_max_interval),
            ("poll.reconcile_interval", p.reconcile_interval),
            ("poll.lease_ttl", p.lease_ttl),
            ("retention.interval", self.retention.interval),
            ("ingest.body_timeout", self.ingest.body_timeout),
            ("shutdown.grace", self.shutdown.grace),
        ] {
            if value.is_zero() {
                return Err(ConfigError::setting(key, "must be above zero"));
            }
        }
        if p.fast_interval > p.slow_interval {
            return Err(ConfigError::setting(
                "poll.fast_interval",
                "must not be longer than poll.slow_interval",
            ));
        }
        let r = &self.retention;
        if !r.dedupe.is_zero() && !r.payloads.is_zero() && r.dedupe < r.payloads {
            return Err(ConfigError::setting(
                "retention.dedupe",
                "must be at least retention.payloads, or pruning would reopen the duplicate window",
            ));
        }
        if r.batch_size == 0 {
            return Err(ConfigError::setting(
                "retention.batch_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Whether ingest accepts requests with no credentials at all.
    pub fn ingest_is_open(&self) -> bool {
        self.webhook.secrets.is_empty() && self.webhook.signature_mode != SignatureMode::Required
    }
}

fn base_figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "--config {}: no such file",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    Ok(figment)
}

fn finish(figment: Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(describe)?;
    config.validate()?;
    Ok(config)
}

/// Maps `SECTION_KEY` (after the prefix) to `section.key`; `None` for variables that belong to
/// tooling rather than the daemon (`MKIO_RELAY_TEST_*`).
fn env_key(rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("test_") {
        return None;
    }
    // Split once: section names have no underscore, keys may (`body_limit`).
    Some(match lower.split_once('_') {
        Some((section, key)) => format!("{section}.{key}"),
        None => lower,
    })
}

/// One line naming the setting, where it came from, and what is wrong.
fn describe(err: figment::Error) -> ConfigError {
    let err = err
        .into_iter()
        .next()
        .unwrap_or_else(|| figment::Error::from("unknown"));
    let key = err.path.join(".");
    let source = match &err.metadata {
        Some(m) if m.name.to_lowercase().contains("environment") => {
            format!(" from environment variable {}", env_name(&key))
        }
        Some(m) => match &m.source {
            Some(source) => format!(" from {source}"),
            None => format!(" from {}", m.name),
        },
        None => String::new(),
    };
    let key = if key.is_empty() {
        "configuration".to_owned()
    } else {
        key
    };
    ConfigError(format!("{key}{source}: {}", err.kind))
}

fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

/// A list given as a TOML array or as one comma-separated string (the environment form).
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Secret>),
        One(Secret),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => s
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect(),
    })
}

/// A list of plain strings, as an array or one comma-separated string.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(list(d)?
        .into_iter()
        .map(|s| s.expose().to_owned())
        .collect())
}

/// A list of durations, as an array or one comma-separated string.
fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    list(d)?
        .iter()
        .map(|s| {
            humantime::parse_duration(s.expose()).map_err(|e| {
                serde::de::Error::custom(format!("{:?} is not a duration ({e})", s.expose()))
            })
        })
        .collect()
}

fn optional_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
    durations(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = string_like(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: (&str, &str) = ("MKIO_RELAY_WEBHOOK_SECRETS", "s1");

    #[test]
    fn defaults_need_a_secret() {
        let err = Config::load_with_env(None, &[]).unwrap_err().to_string();
        assert!(err.contains("webhook.secrets"), "{err}");
        assert!(err.contains("MKIO_RELAY_WEBHOOK_SECRETS"), "{err}");
    }

    #[test]
    fn defaults_with_a_secret() {
        let c = Config::load_with_env(None, &[SECRET]).unwrap();
        assert_eq!(c.database.url, "sqlite:./data/mkio-relay.db");
        assert_eq!(c.ingest.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.webhook.secrets, vec![Secret::new("s1")]);
        assert_eq!(c.ingest.body_limit, 1 << 20);
    }

    #[test]
    fn environment_names_work_exactly() {
        let c = Config::load_with_env(
            None,
            &[
                ("MKIO_RELAY_DATABASE_URL", "postgres://u@h/db"),
                ("MKIO_RELAY_INGEST_LISTEN", "0.0.0.0:9000"),
                ("MKIO_RELAY_API_LISTEN", "127.0.0.1:9001"),
                ("MKIO_RELAY_WEBHOOK_SECRETS", "a, b,12345"),
                ("MKIO_RELAY_API_TOKEN", "987"),
                ("MKIO_RELAY_INGEST_BODY_LIMIT", "2048"),
                ("MKIO_RELAY_TEST_POSTGRES_URL", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://u@h/db");
        assert_eq!(c.ingest.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(
            c.webhook.secrets,
            vec![Secret::new("a"), Secret::new("b"), Secret::new("12345")]
        );
        assert_eq!(c.api.token.expose(), "987");
        assert_eq!(c.ingest.body_limit, 2048);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (var, value, needle) in [
            ("MKIO_RELAY_DATABASE_URL", "mysql://x", "database.url"),
            ("MKIO_RELAY_INGEST_LISTEN", "nowhere", "ingest.listen"),
            (
                "MKIO_RELAY_DATABASE_BUSY_TIMEOUT",
                "soon",
                "database.busy_timeout",
            ),
            (
                "MKIO_RELAY_WEBHOOK_SIGNATURE_MODE",
                "maybe",
                "webhook.signature_mode",
            ),
            ("MKIO_RELAY_INGEST_BODY_LIMIT", "0", "ingest.body_limit"),
            ("MKIO_RELAY_NOPE_SETTING", "1", "nope"),
        ] {
            let err = Config::load_with_env(None, &[SECRET, (var, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{var}={value}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn unauthenticated_only_when_explicit() {
        let c = Config::load_with_env(
            None,
            &[("MKIO_RELAY_WEBHOOK_ALLOW_UNAUTHENTICATED", "true")],
        )
        .unwrap();
        assert!(c.ingest_is_open());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = Config::load_with_env(None, &[("MKIO_RELAY_WEBHOOK_SECRETS", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
