//! HTTP: the ingest router (internet-facing), the API router (local applications), and the
//! pieces they share.

pub mod api;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod resources;
pub mod serve;
pub mod subscriptions;
pub mod views;
pub mod watches;
