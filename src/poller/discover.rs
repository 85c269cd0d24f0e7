//! Discovery of the configured kinds: narrowed list calls that find the resources to watch
//! (and report their state on the way, so a list doubles as a poll).

use super::Poller;
use crate::domain::polled::{is_transitional, jittered};
use crate::domain::resource::{parse_source, ResourceKind};
use crate::domain::time::now_ms;
use crate::store::watches::{OnExisting, WatchRow};
use serde_json::Value;

/// The kinds discovery can list, for `poll.kinds`.
pub const DISCOVERABLE: [ResourceKind; 8] = [
    ResourceKind::StreamingEndpoint,
    ResourceKind::MediaLiveEvent,
    ResourceKind::LiveOutput,
    ResourceKind::Asset,
    ResourceKind::LiveChannel,
    ResourceKind::LiveEvent,
    ResourceKind::StaticMultiviewChannel,
    ResourceKind::StaticMultiviewEvent,
];

/// The collection path that lists `kind` in `project` (live outputs are listed per live event).
fn collection(kind: ResourceKind, project: &str) -> Option<String> {
    let tail = match kind {
        ResourceKind::StreamingEndpoint => "media/streamingEndpoints",
        ResourceKind::MediaLiveEvent | ResourceKind::LiveOutput => "media/liveEvents",
        ResourceKind::Asset => "media/assets",
        ResourceKind::LiveChannel => "live/liveChannels",
        ResourceKind::LiveEvent => "live/liveEvents",
        ResourceKind::StaticMultiviewChannel => "live/staticMultiviewChannels",
        ResourceKind::StaticMultiviewEvent => "live/staticMultiviewEvents",
        _ => return None,
    };
    Some(format!("/api/v1/projects/{project}/{tail}"))
}

/// A list item's name: `name`, or `metadata.name` (Live API bodies).
fn item_name(item: &Value) -> Option<&str> {
    item.get("name")
        .and_then(Value::as_str)
        .or_else(|| item.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// A list item's state, where MK.IO puts it for each API family.
pub fn item_state(item: &Value) -> Option<&str> {
    [
        "/properties/resourceState",
        "/properties/state",
        "/status/state",
    ]
    .iter()
    .find_map(|p| item.pointer(p).and_then(Value::as_str))
}

impl Poller {
    /// Lists every configured kind in `project` and watches what it finds.
    pub(super) async fn discover(&self, project: &str) {
        for kind in &self.config.kinds {
            let Ok(kind) = kind.parse::<ResourceKind>() else {
                continue;
            };
            let Some(list_path) = collection(kind, project) else {
                continue;
            };
            let items = match self.mkio.list(&list_path).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(project, %kind, error = %e, "discovery list failed");
                    continue;
                }
            };
            if kind == ResourceKind::LiveOutput {
                for event in items.iter().filter_map(item_name) {
                    let outputs_path = format!("{list_path}/{event}/liveOutputs");
                    match self.mkio.list(&outputs_path).await {
                        Ok(outputs) => self.watch_items(project, &outputs_path, &outputs).await,
                        Err(e) => {
                            tracing::warn!(project, %kind, error = %e, "discovery list failed")
                        }
                    }
                }
            } else {
                self.watch_items(project, &list_path, &items).await;
            }
        }
    }

    async fn watch_items(&self, project: &str, list_path: &str, items: &[Value]) {
        let now = now_ms();
        for item in items {
            let Some(name) = item_name(item) else {
                continue;
            };
            let parsed = parse_source(&format!("{list_path}/{name}"));
            let state = item_state(item);
            let interval = match state {
                Some(s) if !is_transitional(s) => self.config.slow_interval,
                _ => self.config.fast_interval,
            };
            // Spread first polls over the interval, so a large discovery never bursts.
            let first = jittered(interval).as_millis() as i64 / 2;
            let mut watch = WatchRow::new(
                parsed.canonical.clone(),
                project.to_owned(),
                "config",
                None,
                interval.as_millis() as i64,
                now + first,
            );
            watch.last_state = state.map(str::to_owned);
            if let Err(e) = self.store.add_watch(&watch, OnExisting::ReviveGone).await {
                tracing::warn!(path = %watch.path, error = %e, "cannot store a watch");
                continue;
            }
            if let Some(state) = state {
                if let Err(e) = self
                    .observe(&parsed.canonical, parsed.key.kind, state, now)
                    .await
                {
                    tracing::warn!(path = %watch.path, error = %e, "cannot record a listed state");
                }
            }
        }
    }
}
