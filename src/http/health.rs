//! `/healthz` (the process answers) and `/readyz` (database reachable, schema current, writer
//! running), on both listeners.

use super::error::ApiError;
use crate::ingest::writer::WriterHandle;
use crate::store::Store;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// `Retry-After` seconds on a 503 from `/readyz`.
const NOT_READY_RETRY_SECS: u64 = 5;

#[derive(Clone)]
pub struct Health {
    pub store: Arc<dyn Store>,
    pub writer: WriterHandle,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when every check passes; otherwise 503 whose `error.code` names the first failed check
/// and whose `error.checks` gives each check's result.
async fn readyz(State(h): State<Health>) -> Result<Json<Value>, ApiError> {
    let writer = h.writer.is_running();
    let (database, migrations) = match h.store.status().await {
        Ok(status) if status.schema_current() => (json!("ok"), json!("ok")),
        Ok(status) => (
            json!("ok"),
            json!({"missing": status.missing_migrations, "unknown": status.unknown_migrations}),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check: database unreachable");
            (json!("unreachable"), json!("not checked"))
        }
    };
    let checks = json!({
        "database": database,
        "migrations": migrations,
        "writer": if writer { "ok" } else { "stopped" },
    });
    let failed = if database != "ok" {
        Some(("storage_unavailable", "the database is unreachable"))
    } else if migrations != "ok" {
        Some((
            "schema_mismatch",
            "the database's migrations differ from this relay's",
        ))
    } else if !writer {
        Some(("writer_stopped", "the writer is not running"))
    } else {
        None
    };
    match failed {
        Some((code, message)) => {
            Err(ApiError::unavailable(code, message, NOT_READY_RETRY_SECS).with("checks", checks))
        }
        None => Ok(Json(json!({
            "status": "ready",
            "database": h.store.backend(),
            "checks": checks,
        }))),
    }
}
