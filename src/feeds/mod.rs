//! Feeds from the outside world: `fetch` gets a feed's bytes over HTTP under the rules that
//! keep an editor from making the server fetch what it must not (http(s) only, public
//! addresses only unless allowed, a timeout, a size cap counted after decompression, at most
//! five redirects, conditional GET); `read` turns a parsed feed into candidate items (pure).
//! Neither knows the store: `service::feeds` does the use case.

pub mod fetch;
pub mod read;

pub use fetch::{FetchError, FetchSettings, Fetched, Fetcher, Validators};
pub use read::{Candidate, Read, parse, read};
