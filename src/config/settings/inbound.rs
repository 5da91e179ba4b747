//! Bounces and complaints coming in: the largest message `squeeze inbound` reads, and the
//! providers' webhooks (Mailgun, Postmark, SendGrid, SES), each off until its key is set.

use super::Setting;
use crate::config::values::{non_empty, parse_size};

pub(super) const INBOUND_MAX_BYTES: Setting = Setting {
    key: "inbound_max_bytes",
    value_name: "SIZE",
    default: Some("10MB"),
    secret: false,
    doc: "Largest message `squeeze inbound` reads; a larger one is ignored (logged, exit 0)",
    parse: |v, d| {
        d.inbound_max_bytes = Some(parse_size(v).ok_or("expected a size like 10MB or 512KB")?);
        Ok(())
    },
};

pub(super) const MAILGUN_SIGNING_KEY: Setting = Setting {
    key: "mailgun_signing_key",
    value_name: "KEY",
    default: None,
    secret: true,
    doc: "Mailgun's HTTP webhook signing key; turns on POST /webhooks/mailgun (unset: 404)",
    parse: |v, d| {
        d.mailgun_signing_key = Some(non_empty(v)?);
        Ok(())
    },
};

pub(super) const POSTMARK_WEBHOOK_USER: Setting = Setting {
    key: "postmark_webhook_user",
    value_name: "USER",
    default: None,
    secret: false,
    doc: "User name in the Postmark webhook URL's HTTP Basic auth; with postmark_webhook_password turns on POST /webhooks/postmark",
    parse: |v, d| {
        let v = non_empty(v)?;
        if v.contains(':') {
            return Err("a Basic auth user name cannot contain `:`".into());
        }
        d.postmark_webhook_user = Some(v);
        Ok(())
    },
};

pub(super) const POSTMARK_WEBHOOK_PASSWORD: Setting = Setting {
    key: "postmark_webhook_password",
    value_name: "PASSWORD",
    default: None,
    secret: true,
    doc: "Password in the Postmark webhook URL's HTTP Basic auth (at least 16 characters)",
    parse: |v, d| {
        if v.len() < 16 {
            return Err("use at least 16 characters".into());
        }
        d.postmark_webhook_password = Some(v.to_owned());
        Ok(())
    },
};

pub(super) const SENDGRID_PUBLIC_KEY: Setting = Setting {
    key: "sendgrid_public_key",
    value_name: "KEY",
    default: None,
    secret: false,
    doc: "SendGrid's Signed Event Webhook verification key (base64, as SendGrid shows it); turns on POST /webhooks/sendgrid (unset: 404)",
    parse: |v, d| {
        d.sendgrid_public_key = Some(crate::inbound::webhooks::sendgrid::PublicKey::parse(v)?);
        Ok(())
    },
};

pub(super) const SES_TOPIC_ARN: Setting = Setting {
    key: "ses_topic_arn",
    value_name: "ARN[,ARN...]",
    default: None,
    secret: false,
    doc: "The SNS topics (comma-separated ARNs) whose SES bounces and complaints are heard; turns on POST /webhooks/ses (unset: 404)",
    parse: |v, d| {
        let topics: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if topics.is_empty() {
            return Err("expected one or more SNS topic ARNs, comma-separated".into());
        }
        if let Some(bad) = topics
            .iter()
            .find(|t| !t.starts_with("arn:aws") || t.split(':').count() != 6)
        {
            return Err(format!(
                "`{bad}` is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ));
        }
        d.ses_topic_arn = Some(topics);
        Ok(())
    },
};

pub(super) const SES_SNS_CERT_URL_OVERRIDE: Setting = Setting {
    key: "ses_sns_cert_url_override",
    value_name: "URL",
    default: None,
    secret: false,
    doc: "FOR TESTS ONLY: fetch SNS signing certificates from this base URL (http allowed) and confirm subscriptions only on its host, instead of sns.<region>.amazonaws.com",
    parse: |v, d| {
        let mut url = url::Url::parse(v.trim()).map_err(|e| format!("expected a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("expected an http or https URL".into());
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        d.ses_sns_cert_url_override = Some(url);
        Ok(())
    },
};
