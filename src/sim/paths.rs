//! MK.IO API paths: which resource, collection, action or webhook rule a request path means.

use super::kinds::{Kind, LIVE_TYPES};

/// One resource, by its canonical path (`/api/v1/projects/{p}/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemRef {
    pub project: String,
    pub kind: Kind,
    /// The transform of a job, the live event of a live output.
    pub parent: Option<String>,
    pub name: String,
    pub path: String,
}

/// What an `/api` path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Collection {
        project: String,
        kind: Kind,
        parent: Option<String>,
        path: String,
    },
    Item(ItemRef),
    State(ItemRef),
    Action(ItemRef, String),
    Rules(String),
    Rule(String, String),
    RuleEvents(String, String),
}

const PREFIX: &str = "/api/v1/projects/";

/// The project of a `/api/v1/projects/{p}/...` path: the rate-limit scope.
pub(crate) fn project_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(PREFIX)?;
    let p = rest.split('/').next()?;
    (!p.is_empty()).then_some(p)
}

/// Strips any `scheme://host` and turns `/transforms/` into `/media/transforms/`, so every
/// spelling of a resource's path finds it.
pub(crate) fn canonical(path: &str) -> String {
    let path = match path.find("://") {
        Some(i) => {
            let after = &path[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => path,
    };
    let path = path.trim_end_matches('/');
    if let Some(project) = project_of(path) {
        let head = format!("{PREFIX}{project}/transforms/");
        if let Some(rest) = path.strip_prefix(&head) {
            return format!("{PREFIX}{project}/media/transforms/{rest}");
        }
    }
    path.to_string()
}

/// The `source` MK.IO puts in a webhook: jobs use the documented `/transforms/` form.
pub(crate) fn event_source(item: &ItemRef) -> String {
    match (item.kind, &item.parent) {
        (Kind::Job, Some(t)) => {
            format!("{PREFIX}{}/transforms/{t}/jobs/{}", item.project, item.name)
        }
        _ => item.path.clone(),
    }
}

/// Parses a request path; `None` means 404.
pub(crate) fn resolve(path: &str) -> Option<Target> {
    let rest = path.strip_prefix(PREFIX)?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let project = segs[0].to_string();
    let base = format!("{PREFIX}{project}");
    let item = |kind, parent: Option<&str>, coll: String, name: &str| ItemRef {
        project: project.clone(),
        kind,
        parent: parent.map(str::to_string),
        name: name.to_string(),
        path: format!("{coll}/{name}"),
    };
    let coll = |kind, parent: Option<&str>, path: String| Target::Collection {
        project: project.clone(),
        kind,
        parent: parent.map(str::to_string),
        path,
    };
    // (kind, parent, collection path, remaining segments after the collection)
    let (kind, parent, cpath, tail): (Kind, Option<&str>, String, &[&str]) = match &segs[1..] {
        ["webhook", "rules"] => return Some(Target::Rules(project)),
        ["webhook", "rules", r] => return Some(Target::Rule(project, r.to_string())),
        ["webhook", "rules", r, "events"] => {
            return Some(Target::RuleEvents(project, r.to_string()))
        }
        ["media", "transforms", t, "jobs", tail @ ..] => (
            Kind::Job,
            Some(*t),
            format!("{base}/media/transforms/{t}/jobs"),
            tail,
        ),
        ["media", "liveEvents", e, "liveOutputs", tail @ ..] => (
            Kind::LiveOutput,
            Some(*e),
            format!("{base}/media/liveEvents/{e}/liveOutputs"),
            tail,
        ),
        ["media", c, tail @ ..] => {
            let kind = match *c {
                "liveEvents" => Kind::MediaLiveEvent,
                "streamingEndpoints" => Kind::StreamingEndpoint,
                "streamingLocators" => Kind::StreamingLocator,
                "assets" => Kind::Asset,
                _ => return None,
            };
            (kind, None, format!("{base}/media/{c}"), tail)
        }
        ["live", c, tail @ ..] => {
            let ty = LIVE_TYPES.iter().find(|t| *t == c)?;
            (Kind::Live(ty), None, format!("{base}/live/{c}"), tail)
        }
        _ => return None,
    };
    match tail {
        [] => Some(coll(kind, parent, cpath)),
        [n] => Some(Target::Item(item(kind, parent, cpath, n))),
        [n, "state"] => Some(Target::State(item(kind, parent, cpath, n))),
        [n, action] if !matches!(kind, Kind::Live(_)) => Some(Target::Action(
            item(kind, parent, cpath, n),
            action.to_string(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_jobs_states_actions_and_rules() {
        let p = "/api/v1/projects/sp/media/transforms/t1/jobs/j1";
        match resolve(p) {
            Some(Target::Item(i)) => {
                assert_eq!(
                    (i.kind, i.parent.as_deref(), i.path.as_str()),
                    (Kind::Job, Some("t1"), p)
                );
                assert_eq!(
                    event_source(&i),
                    "/api/v1/projects/sp/transforms/t1/jobs/j1"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&format!("{p}/state")),
            Some(Target::State(_))
        ));
        assert!(
            matches!(resolve(&format!("{p}/cancelJob")), Some(Target::Action(_, a)) if a == "cancelJob")
        );
        assert!(matches!(
            resolve("/api/v1/projects/sp/live/liveChannels"),
            Some(Target::Collection {
                kind: Kind::Live("liveChannels"),
                ..
            })
        ));
        assert!(matches!(
            resolve("/api/v1/projects/sp/webhook/rules/r/events"),
            Some(Target::RuleEvents(..))
        ));
        assert_eq!(resolve("/api/v1/projects/sp/media/nothing"), None);
        assert_eq!(resolve("/api/v1/projects/sp/live/other/x"), None);
        assert_eq!(resolve("/api/v1/projects//media/assets"), None);
        assert_eq!(resolve("/api/v1/user/tokens"), None);
    }

    #[test]
    fn canonical_strips_host_and_adds_media() {
        assert_eq!(
            canonical("https://app.mk.io/api/v1/projects/sp/transforms/t/jobs/j"),
            "/api/v1/projects/sp/media/transforms/t/jobs/j"
        );
        assert_eq!(project_of("/api/v1/projects/sp/media/assets"), Some("sp"));
        assert_eq!(project_of("/api/v1/user"), None);
    }
}
