//! MK.IO REST client: authentication, errors with `ref`, pagination, the per-scope request
//! budget, token expiry warnings and the webhook rule commands.
//!
//! # Metrics
//!
//! Recorded through the `metrics` facade (exported by whatever recorder the app installs):
//!
//! - `mkio_requests_total{scope,method,status}` (counter): every attempt; `status` is the HTTP
//!   status, or `timeout` / `error` when there was none.
//! - `mkio_throttled_total{scope}` (counter): 429 answers.
//! - `mkio_errors_total{scope,status,code}` (counter): failed attempts; `code` is MK.IO's
//!   `error.code` (empty when absent), `status` as above.
//! - `mkio_budget_remaining{scope,class}` (gauge): slots left in the current 60-second window
//!   after each grant; `class` is `read` or `write`.
//! - `mkio_last_success_timestamp_seconds{scope}` (gauge): Unix time of the last 2xx.
//!
//! `scope` is the project name, or `organization` for paths outside `/api/v1/projects/{p}/`.

pub mod budget;
pub mod client;
pub mod error;
pub mod list;
pub mod rules;
pub mod token;

pub use budget::{scope_of, Budget, Class, Outcome, Scope};
pub use client::MkioClient;
pub use error::MkioError;
pub use list::{ListQuery, Page};
