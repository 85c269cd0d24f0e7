//! Fan-out of committed events to local consumers: the feed (one store reader per process that
//! publishes events in sequence order), followers (gap-free cursors for SSE and long-polls),
//! and per-resource wake-ups for waiters.

pub mod dispatcher;
pub mod feed;
pub mod follower;
pub mod subscriptions;
pub mod waiters;
