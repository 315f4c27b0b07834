//! `policy test`: decision test cases in YAML run against a policy.
//! STUB: to be implemented (policy helper).
