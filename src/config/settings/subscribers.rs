//! Sign-ups and subscribers: the sign-up rate limit, confirmation links, the welcome email, the
//! CSV import's ceiling.

use std::num::NonZeroU32;

use super::Setting;
use crate::config::values::{boolean, duration, parse_size};

pub(super) const SUBSCRIBE_PER_MINUTE: Setting = Setting {
    key: "subscribe_per_minute",
    value_name: "N",
    default: Some("10"),
    secret: false,
    doc: "Sign-up requests per client IP per minute; 0 turns the limit off",
    parse: |v, d| {
        d.subscribe_per_minute = Some(
            v.parse::<u32>()
                .map(NonZeroU32::new)
                .map_err(|_| "expected a whole number (0: no limit)")?,
        );
        Ok(())
    },
};

pub(super) const CONFIRMATION_TTL: Setting = Setting {
    key: "confirmation_ttl",
    value_name: "DURATION",
    default: Some("48h"),
    secret: false,
    doc: "How long a confirmation link stays valid",
    parse: |v, d| {
        d.confirmation_ttl = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const WELCOME: Setting = Setting {
    key: "welcome",
    value_name: "BOOL",
    default: Some("true"),
    secret: false,
    doc: "Send a welcome email (templates welcome.*) once a subscriber confirms",
    parse: |v, d| {
        d.welcome = Some(boolean(v)?);
        Ok(())
    },
};

pub(super) const IMPORT_MAX_BYTES: Setting = Setting {
    key: "import_max_bytes",
    value_name: "SIZE",
    default: Some("100MB"),
    secret: false,
    doc: "Largest CSV `subscribers import` reads (e.g. 100MB, 512KB); larger files are refused",
    parse: |v, d| {
        d.import_max_bytes = Some(parse_size(v).ok_or("expected a size like 100MB or 512KB")?);
        Ok(())
    },
};
