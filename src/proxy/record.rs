//! The request's decision record, owned by a guard that cannot be skipped.
//! The pipeline future can be dropped at any await point (the client closed
//! its connection or reset its HTTP/2 stream); the guard's `Drop` then
//! writes what is true at that moment — a decision record marked
//! `cancelled` (saying whether the store had been contacted), or, when the
//! allowed decision was already recorded but no response went out, the
//! `complete` record saying the client went away. No await point of a
//! request can leave it without its decision record.

use std::sync::Arc;
use std::time::Instant;

use crate::audit::{AuditError, AuditEvent, DecisionKind, EventKind};
use crate::policy::Policy;
use crate::policy::Reason;
use crate::state::App;
use crate::upstream::UpstreamBody;

use super::body::AuditedBody;

/// Where the request's record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No decision record handed to the writer yet.
    Open,
    /// The decision record is in the writer's queue.
    Submitted,
    /// Everything this guard owes is written (or handed to the body).
    Done,
}

/// The audit record of one request and the duty to write it.
pub struct Recorder {
    app: Arc<App>,
    /// The policy the request is decided under (metrics labels).
    policy: Arc<Policy>,
    pub event: AuditEvent,
    stage: Stage,
    /// The request went out to the store.
    pub contacted: bool,
    started: Instant,
}

impl Recorder {
    pub fn new(app: Arc<App>, policy: Arc<Policy>, event: AuditEvent, started: Instant) -> Self {
        Recorder {
            app,
            policy,
            event,
            stage: Stage::Open,
            contacted: false,
            started,
        }
    }

    /// Writes the decision record (durable per `fsync` when this returns Ok).
    pub async fn write_decision(
        &mut self,
        decision: DecisionKind,
        status: u16,
        reason: Option<Reason>,
    ) -> Result<u64, AuditError> {
        self.event.decision = decision;
        self.event.status = status;
        self.event.reason = reason.map(Reason::code);
        let ack = self.app.audit.submit(&self.event).await?;
        // From here the record will be written whatever happens to us.
        self.stage = Stage::Submitted;
        let written = ack.wait().await;
        if decision == DecisionKind::Deny || written.is_err() {
            self.stage = Stage::Done;
        }
        written
    }

    /// Hands the allowed request's record to the response body, which writes
    /// the `complete` record when the body ends or is dropped.
    pub fn into_body(mut self, body: UpstreamBody) -> AuditedBody {
        self.stage = Stage::Done;
        let event = std::mem::take(&mut self.event);
        AuditedBody::new(body, self.app.audit.clone(), event, self.started)
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        match self.stage {
            Stage::Done => {}
            Stage::Open => {
                // Keep a decision already reached; otherwise none was.
                if self.event.reason.is_none() && self.event.decision == DecisionKind::Deny {
                    self.event.reason = Some(Reason::ClientCancelled.code());
                    self.event.status = Reason::ClientCancelled.status().as_u16();
                }
                self.event.cancelled = Some(true);
                self.event.upstream_contacted = Some(self.contacted);
                self.event.duration_ms = Some(self.elapsed_ms());
                self.app.audit.record_nowait(&self.event);
                super::count(
                    &self.app,
                    &self.policy,
                    &self.event,
                    Reason::ClientCancelled.code(),
                );
            }
            Stage::Submitted => {
                // The allow decision is recorded; no response went out.
                self.event.event = EventKind::Complete;
                self.event.bytes = Some(0);
                self.event.ended = Some("client_gone");
                self.event.duration_ms = Some(self.elapsed_ms());
                self.app.audit.record_nowait(&self.event);
            }
        }
    }
}
