//! Inter-sandbox (and, in the SMP build, inter-core) channels: shared-memory mailboxes.
pub mod ring;
#[cfg(feature = "image")]
pub mod endpoint;
