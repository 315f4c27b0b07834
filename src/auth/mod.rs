//! Authentication: bearer extraction (docs/reference.md §6 rule 3), key sets (JWKS
//! file, HS256 secret), JWT verification (rule 4) and the verified-token
//! cache, producing `Claims`. Also dev tooling: minting tokens and generating
//! dev keys (`mint`).
//!
//! Layout: `bearer` finds the token, `jose` splits it and reads its header,
//! `keys` and `jwks` load and select verification keys, `signature`
//! checks signatures with keys parsed once, `registered` checks
//! `iss`/`aud`/`exp`/`iat`/`nbf`, `extract` maps the payload to `Claims`,
//! `cache` remembers verified tokens and `verifier` ties them together.
//! `issuer` holds one issuer's live keys; `remote` fetches them from the
//! identity provider (`jwks_url`, OIDC discovery) in the background.

mod bearer;
mod cache;
pub mod claims;
mod error;
pub(crate) mod extract;
mod issuer;
mod jose;
mod jwks;
mod keys;
pub mod mint;
pub(crate) mod registered;
mod remote;
mod signature;
mod verifier;

#[cfg(test)]
mod differential_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod verifier_tests;

pub use bearer::{bearer, Bearer};
pub use claims::Claims;
pub use error::AuthError;
pub use remote::IssuerStatus;
pub use verifier::Verifier;
