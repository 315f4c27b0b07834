//! purposegate: a purpose-bound access-control reverse proxy for stores of user
//! content. The crate is laid out one module per concern; `policy::decide` is
//! the functional core that `serve`, `explain` and `policy test` share.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod config;
pub mod consent;
pub mod files;
pub mod fuzzing;
pub mod inject;
pub mod justification;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod preflight;
pub mod proxy;
pub mod server;
pub mod state;
pub mod time;
pub mod tls;
pub mod upstream;
