//! Webhook ingest: authentication, body decoding, and the group-commit writer.

pub mod auth;
pub mod decode;
pub mod signature;
pub mod writer;
