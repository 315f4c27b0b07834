//! Authentication: bearer extraction, key sets (JWKS file, HS256 secret),
//! JWT verification and the verified-token cache, producing `Claims`.
//! Also dev tooling: minting tokens and generating dev keys.
//! STUB: to be implemented (auth helper).

pub mod claims;

pub use claims::Claims;
