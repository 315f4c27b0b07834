//! What the audit record says was verified about a justification: the state
//! the proxy saw and where that answer came from. Proposed record fields:
//! `justification_state` (`open` | `closed` | `not_found` | `unavailable`)
//! and `justification_source` (`fresh` | `cached` | `stale`, `null` when
//! unavailable); both absent when the purpose is not checked.

use serde::Serialize;

use super::{Answer, Looked, Source, Status};

/// The state seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Closed,
    NotFound,
    Unavailable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::NotFound => "not_found",
            State::Unavailable => "unavailable",
        }
    }
}

/// The audit facts of one lookup (flatten into the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AuditFacts {
    pub justification_state: State,
    pub justification_source: Option<Source>,
}

impl Looked {
    /// The audit facts of this lookup.
    pub fn audit_facts(&self) -> AuditFacts {
        let state = match &self.answer {
            Answer::Found(j) if j.status == Status::Open => State::Open,
            Answer::Found(_) => State::Closed,
            Answer::NotFound => State::NotFound,
            Answer::Unavailable(_) => State::Unavailable,
        };
        AuditFacts {
            justification_state: state,
            justification_source: self.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::justification::{Justification, Kind, Unavailable};
    use std::sync::Arc;

    #[test]
    fn serializes_as_documented() {
        let open = Looked {
            kind: Kind::Case,
            answer: Answer::Found(Arc::new(Justification {
                status: Status::Open,
                assignees: vec![],
                subjects: vec![],
                requested_by: None,
            })),
            source: Some(Source::Stale),
        };
        assert_eq!(
            serde_json::to_string(&open.audit_facts()).unwrap(),
            r#"{"justification_state":"open","justification_source":"stale"}"#
        );
        let down = Looked {
            kind: Kind::Case,
            answer: Answer::Unavailable(Unavailable::FailingFast),
            source: None,
        };
        assert_eq!(
            serde_json::to_string(&down.audit_facts()).unwrap(),
            r#"{"justification_state":"unavailable","justification_source":null}"#
        );
        let gone = Looked {
            kind: Kind::Ticket,
            answer: Answer::NotFound,
            source: Some(Source::Cached),
        };
        assert_eq!(gone.audit_facts().justification_state.as_str(), "not_found");
    }
}
