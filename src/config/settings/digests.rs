//! What a digest carries (List-Id, List-Unsubscribe mailto, postal address, archive link) and
//! how long it and its deliveries live: missed sends, retries of one-offs, fan-out chunks,
//! retention.

use std::num::NonZeroU32;

use super::Setting;
use crate::config::values::{boolean, duration, list_id_ok, retention};

pub(super) const LIST_ID: Setting = Setting {
    key: "list_id",
    value_name: "LIST_ID",
    default: None,
    secret: false,
    doc: "The List-Id header of digests (RFC 2919), e.g. `News <news.example.com>` \
          [default: <from name> <<from user>.<from domain>>]",
    parse: |v, d| {
        if !list_id_ok(v) {
            return Err("expected `Name <id.example.com>` on one line: a dot-atom \
                 with at least one dot between `<` and `>` (RFC 2919)"
                .into());
        }
        d.list_id = Some(v.to_owned());
        Ok(())
    },
};

pub(super) const UNSUBSCRIBE_MAILTO: Setting = Setting {
    key: "unsubscribe_mailto",
    value_name: "ADDRESS",
    default: None,
    secret: false,
    doc: "An address offered as <mailto:…> in List-Unsubscribe besides the one-click URL",
    parse: |v, d| {
        let a = crate::domain::EmailAddress::parse(v).map_err(|e| e.to_string())?;
        d.unsubscribe_mailto = Some(format!("mailto:{a}?subject=unsubscribe"));
        Ok(())
    },
};

pub(super) const POSTAL_ADDRESS: Setting = Setting {
    key: "postal_address",
    value_name: "TEXT",
    default: None,
    secret: false,
    doc: "The sender's physical postal address, shown in every digest's footer (CAN-SPAM)",
    parse: |v, d| {
        let v = v.trim();
        if v.chars().any(char::is_control) || v.len() > 300 {
            return Err("expected one line of at most 300 characters".into());
        }
        d.postal_address = Some(v.to_owned()).filter(|v| !v.is_empty());
        Ok(())
    },
};

pub(super) const ARCHIVE: Setting = Setting {
    key: "archive",
    value_name: "BOOL",
    default: Some("true"),
    secret: false,
    doc: "Publish sent digests at /archive (pages and an Atom feed) and put a \"View in \
          browser\" link in every digest email",
    parse: |v, d| {
        d.archive = Some(boolean(v)?);
        Ok(())
    },
};

pub(super) const MISSED_GRACE: Setting = Setting {
    key: "missed_grace",
    value_name: "DURATION",
    default: Some("6h"),
    secret: false,
    doc: "A digest (or one wave of a digest delivered at each subscriber's time) whose send time passed while nothing ran is still sent within this window",
    parse: |v, d| {
        d.missed_grace = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const DIGEST_TTL: Setting = Setting {
    key: "digest_ttl",
    value_name: "DURATION",
    default: Some("24h"),
    secret: false,
    doc: "How long a one-off digest's deliveries are retried when there is no daily schedule",
    parse: |v, d| {
        d.digest_ttl = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const FANOUT_CHUNK: Setting = Setting {
    key: "fanout_chunk",
    value_name: "N",
    default: Some("5000"),
    secret: false,
    doc: "Subscribers per fan-out chunk (1-1000000): each chunk of a digest's deliveries commits on its own, so sending starts on the first while the rest is written",
    parse: |v, d| {
        d.fanout_chunk = Some(
            v.parse::<NonZeroU32>()
                .ok()
                .filter(|n| n.get() <= 1_000_000)
                .ok_or("expected a whole number from 1 to 1000000")?,
        );
        Ok(())
    },
};

pub(super) const DELIVERY_RETENTION: Setting = Setting {
    key: "delivery_retention",
    value_name: "DURATION",
    default: Some("90d"),
    secret: false,
    doc: "How long each delivery's own record is kept (0: for ever): older ones of finished digests are deleted, their digest's counts kept in a roll-up, so every statistic stays the same",
    parse: |v, d| {
        d.delivery_retention = Some(retention(v)?);
        Ok(())
    },
};
