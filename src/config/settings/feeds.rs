//! Feeds: how often they are polled, and the timeout, size and address limits of one fetch.

use super::Setting;
use crate::config::values::{boolean, duration, parse_size};

pub(super) const FEED_INTERVAL: Setting = Setting {
    key: "feed_interval",
    value_name: "DURATION",
    default: Some("15m"),
    secret: false,
    doc: "How often each feed is polled for new entries",
    parse: |v, d| {
        d.feed_interval = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const FEED_TIMEOUT: Setting = Setting {
    key: "feed_timeout",
    value_name: "DURATION",
    default: Some("10s"),
    secret: false,
    doc: "Timeout for fetching one feed, body included",
    parse: |v, d| {
        d.feed_timeout = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const FEED_MAX_BYTES: Setting = Setting {
    key: "feed_max_bytes",
    value_name: "SIZE",
    default: Some("5MB"),
    secret: false,
    doc: "Largest feed read (e.g. 5MB), counted after decompression; larger ones fail",
    parse: |v, d| {
        d.feed_max_bytes = Some(parse_size(v).ok_or("expected a size like 5MB or 512KB")?);
        Ok(())
    },
};

pub(super) const FEED_ALLOW_PRIVATE: Setting = Setting {
    key: "feed_allow_private",
    value_name: "BOOL",
    default: Some("false"),
    secret: false,
    doc: "Allow feeds on loopback, private and link-local addresses (refused by default so editors cannot make the server fetch internal URLs)",
    parse: |v, d| {
        d.feed_allow_private = Some(boolean(v)?);
        Ok(())
    },
};
