//! Squeeze's integration tests: one binary, a module per area. What the modules share lives in
//! the `squeeze-test-support` crate (also used by the benchmark); `helpers` adds what only
//! this binary knows, the path of the `squeeze` binary.

mod archive;
mod bounces;
mod claims;
mod cli;
mod connections;
mod delivery;
mod digests;
mod dkim;
mod doctor;
mod email;
mod engine;
mod fan_out;
mod feeds;
mod helpers;
mod openapi;
mod operators;
mod pages;
mod retention;
mod scaleout;
mod scheduler;
mod signup;
mod storage;
mod studio;
mod subscription;
mod test_sends;
mod tz;
mod waves;
mod webhooks;
