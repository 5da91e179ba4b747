//! Mail out: the SMTP relay (its URL, extra roots, timeout) or the outbox folder, the From
//! mailbox, and the envelope sender of VERP bounces with its key.

use std::path::{Path, PathBuf};

use super::Setting;
use crate::config::values::duration;
use crate::mail::settings::{SmtpSettings, read_certificates};

pub(super) const SMTP_URL: Setting = Setting {
    key: "smtp_url",
    value_name: "URL",
    default: None,
    secret: true,
    doc: "SMTP relay: smtp://host:25, smtp://user:pass@host:587?tls=required, \
          ?tls=opportunistic, smtps://user:pass@host:465 [default: .eml files in outbox]",
    parse: |v, d| {
        d.smtp = Some(SmtpSettings::from_url(v)?);
        Ok(())
    },
};

pub(super) const SMTP_CA_FILE: Setting = Setting {
    key: "smtp_ca_file",
    value_name: "PEM_FILE",
    default: None,
    secret: false,
    doc: "PEM file of extra root certificates to trust for the relay's TLS",
    parse: |v, d| {
        d.smtp_ca = Some(read_certificates(Path::new(v))?);
        Ok(())
    },
};

pub(super) const SMTP_TIMEOUT: Setting = Setting {
    key: "smtp_timeout",
    value_name: "DURATION",
    default: Some("30s"),
    secret: false,
    doc: "Timeout for connecting and for each message's SMTP exchange",
    parse: |v, d| {
        d.smtp_timeout = Some(duration(v)?);
        Ok(())
    },
};

pub(super) const FROM: Setting = Setting {
    key: "from",
    value_name: "MAILBOX",
    default: Some("Squeeze <newsletter@squeeze.localhost>"),
    secret: false,
    doc: "From mailbox of every email; its display name is the list's name on pages",
    parse: |v, d| {
        if v.chars().any(char::is_control) {
            return Err("it contains a control character".into());
        }
        d.from = Some(
            v.parse()
                .map_err(|e| format!("expected a mailbox like `News <news@example.com>` ({e})"))?,
        );
        Ok(())
    },
};

pub(super) const OUTBOX: Setting = Setting {
    key: "outbox",
    value_name: "DIR",
    default: Some("./outbox"),
    secret: false,
    doc: "Folder for .eml files when no SMTP relay is set",
    parse: |v, d| {
        d.outbox = Some(PathBuf::from(v));
        Ok(())
    },
};

pub(super) const BOUNCE_ADDRESS: Setting = Setting {
    key: "bounce_address",
    value_name: "ADDRESS",
    default: None,
    secret: false,
    doc: "Envelope sender of every email, as bounces+<token>@domain (VERP), so bounces name their delivery; unset: the From address",
    parse: |v, d| {
        let v = v.trim();
        let fits = v.parse::<lettre::Address>().is_ok()
            && !v.contains('+')
            && v.rsplit_once('@').is_some_and(|(_, dom)| dom.contains('.'));
        if !fits {
            return Err(
                "expected an address like bounces@bounce.example.com, without a `+`".into(),
            );
        }
        d.bounce_address = Some(v.to_owned());
        Ok(())
    },
};

pub(super) const BOUNCE_SECRET: Setting = Setting {
    key: "bounce_secret",
    value_name: "SECRET",
    default: None,
    secret: true,
    doc: "Key of the MAC in each VERP token (at least 32 characters); required with bounce_address",
    parse: |v, d| {
        if v.len() < crate::domain::bounce::MIN_SECRET {
            return Err(format!(
                "use at least {} characters",
                crate::domain::bounce::MIN_SECRET
            ));
        }
        d.bounce_secret = Some(v.to_owned());
        Ok(())
    },
};
