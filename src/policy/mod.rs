//! The access policy: its model (`model`), YAML loading and compilation
//! (`load`), route matching (`routes`), the pure decision functions
//! (`decide`), reason codes (`reason`) and decision test cases (`testcases`).

pub mod decide;
pub mod load;
pub mod model;
pub mod reason;
pub mod routes;
pub mod testcases;

pub use decide::{
    decide_post, decide_pre, AuthState, Check, Lookup, NoTrace, Outcome, RequestFacts,
    ResponseMeta, Trace,
};
pub use model::{Policy, PurposeRule};
pub use reason::Reason;
pub use routes::{Route, RouteMatch, RouteTable};
