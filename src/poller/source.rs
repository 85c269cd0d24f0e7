//! What the poller needs from MK.IO, as a trait: the real client implements it, and tests can
//! put a scripted one in its place.

use async_trait::async_trait;
use serde_json::Value;

/// Why a call to MK.IO gave no answer the poller can use.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// 404: the resource does not exist (any more).
    #[error("MK.IO answered 404: the resource does not exist")]
    NotFound,
    /// Anything else: throttled, a 5xx, a timeout, a body it cannot read. The client has
    /// already paused the scope's budget; the poller tries again later.
    #[error("{0}")]
    Failed(String),
}

/// One entry of a webhook rule's delivery history (MKIO.md B).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub created: String,
    pub source: String,
    pub event_type: String,
    pub status: String,
}

#[async_trait]
pub trait MkioSource: Send + Sync {
    /// GET `{path}/state`: the resource's state string.
    async fn state(&self, path: &str) -> Result<String, PollError>;
    /// GET `path`: the whole resource.
    async fn get(&self, path: &str) -> Result<Value, PollError>;
    /// Every item of the collection at `path`, following next links.
    async fn list(&self, path: &str) -> Result<Vec<Value>, PollError>;
    /// The delivery history of `project`'s webhook rule.
    async fn deliveries(&self, project: &str) -> Result<Vec<DeliveryRecord>, PollError>;
}

fn poll_error(e: crate::mkio::MkioError) -> PollError {
    match e.status() {
        Some(404) => PollError::NotFound,
        _ => PollError::Failed(e.to_string()),
    }
}

/// History entries read per reconciliation pass.
const HISTORY_LIMIT: usize = 500;

/// The real MK.IO, through the budgeted client; `rule_name` is the rule whose history
/// reconciliation reads.
pub struct Client {
    pub client: crate::mkio::MkioClient,
    pub rule_name: String,
}

#[async_trait]
impl MkioSource for Client {
    async fn state(&self, path: &str) -> Result<String, PollError> {
        self.client.state(path).await.map_err(poll_error)
    }

    async fn get(&self, path: &str) -> Result<Value, PollError> {
        self.client.get(path).await.map_err(poll_error)
    }

    async fn list(&self, path: &str) -> Result<Vec<Value>, PollError> {
        self.client
            .list(path, &crate::mkio::list::ListQuery::default())
            .await
            .map_err(poll_error)
    }

    async fn deliveries(&self, project: &str) -> Result<Vec<DeliveryRecord>, PollError> {
        let entries =
            crate::mkio::rules::history(&self.client, project, &self.rule_name, HISTORY_LIMIT)
                .await
                .map_err(poll_error)?;
        Ok(entries
            .into_iter()
            .map(|e| DeliveryRecord {
                created: e.created,
                source: e.source,
                event_type: e.r#type,
                status: e.status,
            })
            .collect())
    }
}
