//! HTTP: the ingest router (internet-facing), the API router (local applications), and the
//! pieces they share.

pub mod api;
pub mod error;
pub mod extract;
pub mod health;
pub mod ingest;
mod views;
