//! Compile-time behaviour of `#[redis_cache]`: every supported shape compiles (and runs
//! uncached with no cache installed), every mistake gives one error on the offending token.
//!
//! Regenerate the goldens with `TRYBUILD=overwrite cargo test -p tests --test ui`, then read
//! each one.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
