//! DKIM signing: the selectors, keys (one, or two for dual signing) and the signing domain.

use std::path::Path;

use super::Setting;
use crate::config::values::dns_name;
use crate::mail::dkim::DkimKey;

pub(super) const DKIM_SELECTOR: Setting = Setting {
    key: "dkim_selector",
    value_name: "SELECTOR",
    default: None,
    secret: false,
    doc: "DKIM selector of `dkim_key`: its public key is published at \
          <selector>._domainkey.<dkim_domain>",
    parse: |v, d| {
        d.dkim_selector = Some(dns_name(v)?);
        Ok(())
    },
};

pub(super) const DKIM_KEY: Setting = Setting {
    key: "dkim_key",
    value_name: "PEM_FILE",
    default: None,
    secret: false,
    doc: "Private key (PEM: RSA of 2048+ bits, or Ed25519) that signs every email (DKIM); \
          unset: nothing is signed",
    parse: |v, d| {
        d.dkim_key = Some(DkimKey::load(Path::new(v))?);
        Ok(())
    },
};

pub(super) const DKIM_SECOND_SELECTOR: Setting = Setting {
    key: "dkim_second_selector",
    value_name: "SELECTOR",
    default: None,
    secret: false,
    doc: "Selector of `dkim_second_key`",
    parse: |v, d| {
        d.dkim_second_selector = Some(dns_name(v)?);
        Ok(())
    },
};

pub(super) const DKIM_SECOND_KEY: Setting = Setting {
    key: "dkim_second_key",
    value_name: "PEM_FILE",
    default: None,
    secret: false,
    doc: "A second key of the other algorithm (Ed25519 beside RSA, or RSA beside Ed25519): \
          every email then carries both signatures (dual signing)",
    parse: |v, d| {
        d.dkim_second_key = Some(DkimKey::load(Path::new(v))?);
        Ok(())
    },
};

pub(super) const DKIM_DOMAIN: Setting = Setting {
    key: "dkim_domain",
    value_name: "DOMAIN",
    default: None,
    secret: false,
    doc: "The signing domain (d=); must align with the From domain (DMARC relaxed) \
          [default: the From domain]",
    parse: |v, d| {
        d.dkim_domain = Some(dns_name(v)?.to_ascii_lowercase());
        Ok(())
    },
};
