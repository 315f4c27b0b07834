//! The access policy: its model (`model`), YAML loading and compilation
//! (`load`), route matching (`routes`), path canonicality (`canonical`), the
//! pure decision functions (`decide`), reason codes (`reason`) and decision
//! test cases (`testcases`).

pub mod canonical;
mod case_raw;
pub mod decide;
#[cfg(test)]
mod decide_tests;
pub mod engine;
pub mod load;
pub mod model;
pub mod reason;
pub mod routes;
pub mod rules;
pub mod testcases;

pub use canonical::is_canonical;
pub use decide::{
    decide_post, decide_pre, has_method_override, owner_is_safe, AuthState, Check, Lookup,
    MetaValue, NoTrace, Outcome, Permitted, RequestFacts, ResponseMeta, Trace,
};
pub use load::{check_upstreams, load_dir};
pub use model::{Policy, PurposeRule, SourceLoc};
pub use reason::Reason;
pub use routes::{Route, RouteMatch, RouteTable};
pub use rules::{Rule, RULES};
