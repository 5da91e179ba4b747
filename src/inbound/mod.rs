//! Mail that comes back: bounces and complaints, parsed into `domain::bounce::Report`s
//! (`parse`). Pure: no store, no Config; `service::inbound` matches and records them.

pub mod parse;
pub mod webhooks;

pub use parse::{Parsed, parse};
