//! The audit trail (CONTRACT §7): record type, canonical encoding and hash
//! chain, the single writer task with group commit, and `audit verify`.
//! STUB: to be implemented (audit helper).
