//! mkio-relay: a durable receiver for MK.IO webhooks. It authenticates each delivery, commits
//! it to an event log (SQLite or Postgres) before acknowledging it, projects the current state
//! of every job and live resource, and serves both to local applications over HTTP.
//!
//! # Layout
//!
//! - `domain`: pure types and rules: CloudEvents, resource keys parsed from `source`, the
//!   state non-regression rule, timestamps. No async, no I/O.
//! - `store`: the `Store` trait; SQLite and Postgres share one set of SQL statements.
//! - `ingest`: shared-secret and Standard Webhooks authentication, body decoding (structured,
//!   batch, binary), and the group-commit writer.
//! - `fanout`: the feed that publishes committed events in order, gap-free followers for
//!   SSE and long-polls, and per-resource wake-ups for waiters.
//! - `http`: the ingest and API routers, error mapping, response views, `/metrics`, and the
//!   OpenAPI document of `/v1`.
//! - `metrics`: the Prometheus recorder and the names of the relay's metrics.
//! - `mkio`: the MK.IO REST client: bearer auth, errors with `ref`, pagination, the per-scope
//!   request budget with backoff, token expiry warnings, and the webhook rule commands.
//! - `poller`: watches polled within the budget at adaptive intervals, discovery, the job
//!   safety net and reconciliation; polled changes go through the ingest writer.
//! - `sim`: mkio-sim, an in-memory MK.IO (jobs, live resources, webhook rules and deliveries,
//!   rate limits, faults) for tests, benchmarks and local trials; also the `mkio-sim` binary.
//! - `upkeep`: retention (pruning payloads, old events and finished deliveries in small steps).
//! - `config`, `cli`, `telemetry`, `shutdown`, `app`: start-up and the composition root.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod fanout;
pub mod healthcheck;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod mkio;
pub mod poller;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod upkeep;
