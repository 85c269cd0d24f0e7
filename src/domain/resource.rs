//! Resource kinds and keys, parsed from a CloudEvent `source` (an MK.IO object path or URL).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::str::FromStr;

/// What kind of MK.IO resource an event is about; spelled in the API exactly as `as_str` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Job,
    LiveChannel,
    LiveEvent,
    StaticMultiviewChannel,
    StaticMultiviewEvent,
    MediaLiveEvent,
    LiveOutput,
    StreamingEndpoint,
    StreamingLocator,
    Asset,
    ScheduledOperation,
    Unknown,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 12] = [
        Self::Job,
        Self::LiveChannel,
        Self::LiveEvent,
        Self::StaticMultiviewChannel,
        Self::StaticMultiviewEvent,
        Self::MediaLiveEvent,
        Self::LiveOutput,
        Self::StreamingEndpoint,
        Self::StreamingLocator,
        Self::Asset,
        Self::ScheduledOperation,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::LiveChannel => "live_channel",
            Self::LiveEvent => "live_event",
            Self::StaticMultiviewChannel => "static_multiview_channel",
            Self::StaticMultiviewEvent => "static_multiview_event",
            Self::MediaLiveEvent => "media_live_event",
            Self::LiveOutput => "live_output",
            Self::StreamingEndpoint => "streaming_endpoint",
            Self::StreamingLocator => "streaming_locator",
            Self::Asset => "asset",
            Self::ScheduledOperation => "scheduled_operation",
            Self::Unknown => "unknown",
        }
    }

    /// The Live API collection name (`liveChannels`, ...) for the four Live API kinds.
    fn from_live_collection(collection: &str) -> Option<Self> {
        match collection {
            "liveChannels" => Some(Self::LiveChannel),
            "liveEvents" => Some(Self::LiveEvent),
            "staticMultiviewChannels" => Some(Self::StaticMultiviewChannel),
            "staticMultiviewEvents" => Some(Self::StaticMultiviewEvent),
            _ => None,
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a kind name that is not one of [`ResourceKind::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown resource kind `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for ResourceKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// Identifies one resource: kind, project, parent (transform, live event, or `{kind}/{name}` of
/// a scheduled operation's owner; empty when the kind has none) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    pub kind: ResourceKind,
    pub project: String,
    pub parent: String,
    pub name: String,
}

impl ResourceKey {
    /// One string that orders deliveries per resource: `kind/project/parent/name`.
    pub fn ordering_key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.kind, self.project, self.parent, self.name
        )
    }

    /// The key fields as the API shows them (`project`, `transform`, `job` for a job, ...).
    pub fn fields(&self) -> Value {
        match self.kind {
            ResourceKind::Job => {
                json!({"project": self.project, "transform": self.parent, "job": self.name})
            }
            ResourceKind::LiveOutput => {
                json!({"project": self.project, "live_event": self.parent, "name": self.name})
            }
            ResourceKind::ScheduledOperation => {
                let (parent_kind, parent) = self.parent.split_once('/').unwrap_or(("", ""));
                json!({"project": self.project, "parent_kind": parent_kind, "parent": parent, "name": self.name})
            }
            ResourceKind::Unknown => json!({"project": self.project, "path": self.name}),
            _ => json!({"project": self.project, "name": self.name}),
        }
    }
}

/// A parsed `source`: the resource it names and its canonical path (the deduplication scope).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSource {
    pub key: ResourceKey,
    pub canonical: String,
}

/// Strips `scheme://host`, a query string and trailing slashes, leaving the object path.
fn object_path(source: &str) -> &str {
    let mut path = source.trim();
    if let Some(idx) = path.find("://") {
        let after = &path[idx + 3..];
        path = after.find('/').map_or("", |slash| &after[slash..]);
    }
    if let Some(q) = path.find(['?', '#']) {
        path = &path[..q];
    }
    path.trim_end_matches('/')
}

/// Parses a CloudEvent `source` into a resource key. Jobs under `/transforms/` and
/// `/media/transforms/` resolve to the same canonical `/media/` path; anything unrecognised is
/// kind `unknown`, keyed by its path.
pub fn parse_source(source: &str) -> ParsedSource {
    let path = object_path(source);
    let segs: Vec<&str> = path.split('/').collect();
    let parsed = match segs.as_slice() {
        ["", "api", "v1", "projects", project, rest @ ..]
            if !project.is_empty() && rest.iter().all(|s| !s.is_empty()) =>
        {
            parse_project_path(project, rest)
        }
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        let project = match segs.as_slice() {
            ["", "api", "v1", "projects", project, ..] => (*project).to_owned(),
            _ => String::new(),
        };
        let canonical = if path.is_empty() {
            source.trim().to_owned()
        } else {
            path.to_owned()
        };
        ParsedSource {
            key: ResourceKey {
                kind: ResourceKind::Unknown,
                project,
                parent: String::new(),
                name: canonical.clone(),
            },
            canonical,
        }
    })
}

fn parse_project_path(project: &str, rest: &[&str]) -> Option<ParsedSource> {
    use ResourceKind as K;
    let (kind, parent, name) = match rest {
        ["transforms", t, "jobs", j] | ["media", "transforms", t, "jobs", j] => {
            (K::Job, (*t).to_owned(), *j)
        }
        ["media", "streamingLocators", n] => (K::StreamingLocator, String::new(), *n),
        ["media", "liveEvents", n] => (K::MediaLiveEvent, String::new(), *n),
        ["media", "liveEvents", e, "liveOutputs", o] => (K::LiveOutput, (*e).to_owned(), *o),
        ["media", "streamingEndpoints", n] => (K::StreamingEndpoint, String::new(), *n),
        ["media", "assets", n] => (K::Asset, String::new(), *n),
        ["live", collection, n] => (K::from_live_collection(collection)?, String::new(), *n),
        ["live", collection, n, "scheduledOperations", op] => {
            let owner = K::from_live_collection(collection)?;
            (K::ScheduledOperation, format!("{owner}/{n}"), *op)
        }
        _ => return None,
    };
    let key = ResourceKey {
        kind,
        project: project.to_owned(),
        parent,
        name: name.to_owned(),
    };
    Some(ParsedSource {
        canonical: canonical_path(&key, rest),
        key,
    })
}

/// The canonical object path: the `/media/` form for jobs, the path as given otherwise.
fn canonical_path(key: &ResourceKey, rest: &[&str]) -> String {
    match key.kind {
        ResourceKind::Job => format!(
            "/api/v1/projects/{}/media/transforms/{}/jobs/{}",
            key.project, key.parent, key.name
        ),
        _ => format!("/api/v1/projects/{}/{}", key.project, rest.join("/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_relative_absolute_and_media_share_one_key() {
        let a = parse_source("/api/v1/projects/studio-prod/transforms/h264-ladder/jobs/job-0001");
        let b = parse_source(
            "https://app.mk.io/api/v1/projects/studio-prod/media/transforms/h264-ladder/jobs/job-0001",
        );
        assert_eq!(a, b);
        assert_eq!(a.key.kind, ResourceKind::Job);
        assert_eq!(a.key.project, "studio-prod");
        assert_eq!(a.key.parent, "h264-ladder");
        assert_eq!(a.key.name, "job-0001");
        assert_eq!(
            a.canonical,
            "/api/v1/projects/studio-prod/media/transforms/h264-ladder/jobs/job-0001"
        );
    }

    #[test]
    fn every_kind_is_recognised() {
        let cases = [
            (
                "/api/v1/projects/p/media/streamingLocators/l",
                ResourceKind::StreamingLocator,
            ),
            (
                "/api/v1/projects/p/media/liveEvents/e",
                ResourceKind::MediaLiveEvent,
            ),
            (
                "/api/v1/projects/p/media/liveEvents/e/liveOutputs/o",
                ResourceKind::LiveOutput,
            ),
            (
                "/api/v1/projects/p/media/streamingEndpoints/s",
                ResourceKind::StreamingEndpoint,
            ),
            ("/api/v1/projects/p/media/assets/a", ResourceKind::Asset),
            (
                "/api/v1/projects/p/live/liveChannels/c",
                ResourceKind::LiveChannel,
            ),
            (
                "/api/v1/projects/p/live/liveEvents/c",
                ResourceKind::LiveEvent,
            ),
            (
                "/api/v1/projects/p/live/staticMultiviewChannels/c",
                ResourceKind::StaticMultiviewChannel,
            ),
            (
                "/api/v1/projects/p/live/staticMultiviewEvents/c",
                ResourceKind::StaticMultiviewEvent,
            ),
            (
                "/api/v1/projects/p/live/liveChannels/c/scheduledOperations/op",
                ResourceKind::ScheduledOperation,
            ),
        ];
        for (source, kind) in cases {
            let parsed = parse_source(source);
            assert_eq!(parsed.key.kind, kind, "{source}");
            assert_eq!(parsed.key.project, "p");
            assert_eq!(parsed.canonical, source);
        }
    }

    #[test]
    fn scheduled_operation_links_its_parent() {
        let p =
            parse_source("/api/v1/projects/p/live/liveChannels/news-247/scheduledOperations/op");
        assert_eq!(p.key.parent, "live_channel/news-247");
        assert_eq!(p.key.fields()["parent_kind"], "live_channel");
        assert_eq!(p.key.fields()["parent"], "news-247");
    }

    #[test]
    fn unrecognised_sources_are_unknown_and_kept() {
        for source in [
            "/api/v1/projects/p/media/transforms/t",
            "/api/v1/projects/p/live/otherThings/x",
            "/api/v1/projects//media/assets/a",
            "urn:example:thing",
            "/api/v1/projects/p/transforms/t/jobs/j/extra",
        ] {
            let parsed = parse_source(source);
            assert_eq!(parsed.key.kind, ResourceKind::Unknown, "{source}");
            assert!(!parsed.canonical.is_empty());
        }
        assert_eq!(
            parse_source("urn:example:thing").canonical,
            "urn:example:thing"
        );
    }

    #[test]
    fn query_and_trailing_slash_are_ignored() {
        let p = parse_source("https://app.mk.io/api/v1/projects/p/media/assets/a/?x=1");
        assert_eq!(p.key.kind, ResourceKind::Asset);
        assert_eq!(p.canonical, "/api/v1/projects/p/media/assets/a");
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in ResourceKind::ALL {
            assert_eq!(kind.as_str().parse::<ResourceKind>().unwrap(), kind);
        }
        assert!("jobs".parse::<ResourceKind>().is_err());
    }
}
