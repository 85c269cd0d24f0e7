//! `/healthz` (the process answers) and `/readyz` (database reachable, writer running).

use super::error::ApiError;
use crate::ingest::writer::WriterHandle;
use crate::store::Store;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

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

async fn readyz(State(h): State<Health>) -> Result<Json<Value>, ApiError> {
    if !h.writer.is_running() {
        return Err(ApiError::unavailable(
            "writer_stopped",
            "the writer is not running",
            5,
        ));
    }
    h.store.ping().await.map_err(|err| {
        tracing::warn!(error = %err, "readiness check: database unreachable");
        ApiError::unavailable("storage_unavailable", "the database is unreachable", 5)
    })?;
    Ok(Json(
        json!({"status": "ready", "database": h.store.backend()}),
    ))
}
