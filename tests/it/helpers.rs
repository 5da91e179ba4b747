//! The test-support crate, and what needs this test binary: the `squeeze` binary Cargo built
//! for it.

use std::process::Child;

pub use squeeze_test_support::smtp::{self, SmtpServer};
pub use squeeze_test_support::{
    ADMIN_TOKEN, Options, TEMPLATES, TestApp, TestDb, WAIT, eventually, on_postgres, seed,
    terminate, wait_exit,
};

/// The `squeeze` binary as a child process (for crash and signal tests), logging to a file in
/// the database's folder.
pub fn spawn_squeeze(args: &[&str], database: &TestDb, env: &[(&str, String)]) -> Child {
    squeeze_test_support::spawn_squeeze(
        std::path::Path::new(env!("CARGO_BIN_EXE_squeeze")),
        args,
        database,
        env,
    )
}
