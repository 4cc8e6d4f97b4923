//! Compile-time behaviour of `#[redis_cache]`: every supported shape compiles (and runs
//! uncached with no cache installed), every mistake gives one error on the offending token.
//!
//! Regenerate the goldens with `TRYBUILD=overwrite cargo test -p tests --test ui`, then read
//! each one. The goldens were made by rustc 1.95.0 (59807616e 2026-04-14); messages that
//! are ours (most of them) do not depend on it, rustc's notes around them may.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
