//! Squeeze's integration tests: one binary, a module per area. What the modules share lives in
//! the `squeeze-test-support` crate (also used by the benchmark); `helpers` adds what only
//! this binary knows, the path of the `squeeze` binary.

mod cli;
mod delivery;
mod digests;
mod dkim;
mod engine;
mod helpers;
mod operators;
mod scaleout;
mod signup;
