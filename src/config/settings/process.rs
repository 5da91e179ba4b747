//! What every command stands on: the database, the templates, the log format, and the
//! DNS server `squeeze doctor` asks.

use std::path::PathBuf;

use super::Setting;
use crate::config::values::is_in_memory;
use crate::config::{DatabaseKind, LogFormat};

pub(super) const DATABASE_URL: Setting = Setting {
    key: "database_url",
    value_name: "URL",
    default: Some("sqlite://squeeze.db"),
    secret: false,
    doc: "Database URL; the scheme picks the backend (sqlite:// or postgres://)",
    parse: |v, d| {
        let kind = if v.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            DatabaseKind::Postgres
        } else {
            return Err(
                "the scheme must be sqlite:// (embedded) or postgres:// (scale-out)".into(),
            );
        };
        if kind == DatabaseKind::Sqlite && is_in_memory(v) {
            return Err(
                "an in-memory SQLite database lives and dies with one connection, \
                 so every request would fail; use a file such as sqlite://squeeze.db"
                    .into(),
            );
        }
        d.database = Some((v.to_owned(), kind));
        Ok(())
    },
};

pub(super) const TEMPLATES: Setting = Setting {
    key: "templates",
    value_name: "DIR",
    default: Some("./templates"),
    secret: false,
    doc: "Folder of email and page templates",
    parse: |v, d| {
        let templates = PathBuf::from(v);
        if !templates.is_dir() {
            return Err("no such folder".into());
        }
        d.templates = Some(templates);
        Ok(())
    },
};

pub(super) const LOG_FORMAT: Setting = Setting {
    key: "log_format",
    value_name: "text|json",
    default: Some("text"),
    secret: false,
    doc: "text (human-readable) or json (one JSON object a line)",
    parse: |v, d| {
        d.log_format = Some(match v {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err("expected text or json".into()),
        });
        Ok(())
    },
};

pub(super) const DOCTOR_NAMESERVER: Setting = Setting {
    key: "doctor_nameserver",
    value_name: "ADDR",
    default: None,
    secret: false,
    doc: "DNS server `squeeze doctor` asks, as ip:port over UDP and TCP [default: the system resolver]",
    parse: |v, d| {
        d.doctor_nameserver = Some(
            v.trim()
                .parse()
                .map_err(|_| "expected an IP address and port, like 127.0.0.1:53".to_owned())?,
        );
        Ok(())
    },
};
