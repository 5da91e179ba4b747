//! The HTTP server: where it listens, its connections' timeouts and ceiling, the public URL of
//! links, and the tokens of the admin API and /metrics.

use std::num::NonZeroUsize;

use url::Url;

use super::Setting;
use crate::config::values::{duration, token};

pub(super) const BIND: Setting = Setting {
    key: "bind",
    value_name: "ADDR",
    default: Some("127.0.0.1:8080"),
    secret: false,
    doc: "Address the HTTP server listens on",
    parse: |v, d| {
        d.bind = Some(
            v.parse()
                .map_err(|_| "expected an IP address and port, like 127.0.0.1:8080".to_owned())?,
        );
        Ok(())
    },
};

pub(super) const HTTP_HEADER_TIMEOUT: Setting = Setting {
    key: "http_header_timeout",
    value_name: "DURATION",
    default: Some("10s"),
    secret: false,
    doc: "How long a client may take to send a request's headers before its connection is closed",
    parse: |v, d| {
        d.http_header_timeout = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const HTTP_IDLE_TIMEOUT: Setting = Setting {
    key: "http_idle_timeout",
    value_name: "DURATION",
    default: Some("60s"),
    secret: false,
    doc: "How long a keep-alive connection may sit idle (nothing read or written) before it is closed",
    parse: |v, d| {
        d.http_idle_timeout = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const HTTP_MAX_CONNECTIONS: Setting = Setting {
    key: "http_max_connections",
    value_name: "N",
    default: Some("10000"),
    secret: false,
    doc: "Most HTTP connections open at once; further clients wait to be accepted (1-1000000; keep it under the file limit, ulimit -n)",
    parse: |v, d| {
        d.http_max_connections = Some(
            v.parse::<NonZeroUsize>()
                .ok()
                .filter(|n| n.get() <= 1_000_000)
                .ok_or("expected a whole number from 1 to 1000000")?,
        );
        Ok(())
    },
};

pub(super) const PUBLIC_URL: Setting = Setting {
    key: "public_url",
    value_name: "URL",
    default: None,
    secret: false,
    doc: "Base URL of links in emails and pages [default: http://<bind>]",
    parse: |v, d| {
        d.public_url = Some(
            Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or("expected an http:// or https:// URL")?,
        );
        Ok(())
    },
};

pub(super) const ADMIN_TOKEN: Setting = Setting {
    key: "admin_token",
    value_name: "TOKEN",
    default: None,
    secret: true,
    doc: "Bearer token (16+ characters) for the admin API and dashboard; unset disables them",
    parse: |v, d| {
        d.admin_token = Some(token(v)?);
        Ok(())
    },
};

pub(super) const METRICS_TOKEN: Setting = Setting {
    key: "metrics_token",
    value_name: "TOKEN",
    default: None,
    secret: true,
    doc: "A token (16+ characters) that may read /metrics besides the admin token",
    parse: |v, d| {
        d.metrics_token = Some(token(v)?);
        Ok(())
    },
};
