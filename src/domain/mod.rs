//! Pure types and rules: CloudEvent envelopes, resource keys, state ordering. No async, no I/O.

pub mod event;
pub mod polled;
pub mod resource;
pub mod state;
pub mod subscription;
pub mod time;
pub mod view;
