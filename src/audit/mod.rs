//! The audit trail (docs/reference.md §7): the record the proxy supplies (`record`), the
//! canonical encoding and SHA-256 hash chain shared by writer and verifier
//! (`chain`), the single writer thread with group commit (`writer`, on top of
//! `target`, `recover` and `rotate`), signed checkpoints and their keys
//! (`sign`), and `audit verify` (`verify`).

pub mod chain;
mod group;
pub mod header;
pub mod record;
mod recover;
mod rotate;
pub mod ship;
pub mod sign;
mod target;
mod thread;
pub mod verify;
pub mod writer;

pub use record::{AuditEvent, DecisionKind, EventKind};
pub use writer::{Ack, AuditCounters, AuditError, AuditSink, Blocked};

#[cfg(test)]
mod sink_tests;
