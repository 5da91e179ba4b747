//! A subscriber's email address, parsed once at the edge.

use std::fmt;

/// RFC 5321 limits: 64 octets of local part, 255 of domain, 254 for the whole path.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_TOTAL: usize = 254;
const MAX_LABEL: usize = 63;

/// A plain `local@domain` addr-spec (dot-atom local part, DNS domain), domain lower-cased.
///
/// No display names, no comments, no quoted local parts, no domain literals, no whitespace or
/// control characters: what is left can go into a header or an SMTP envelope as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the email address is empty")]
    Empty,
    #[error("the email address contains a control character or line break")]
    ControlCharacter,
    #[error("the email address contains whitespace")]
    Whitespace,
    #[error("the email address must be plain ASCII")]
    NonAscii,
    #[error("the email address must have exactly one @ between a name and a domain")]
    Shape,
    #[error("the email address is longer than {MAX_TOTAL} characters")]
    TooLong,
    #[error("the part before the @ is longer than {MAX_LOCAL} characters")]
    LocalTooLong,
    #[error("the part before the @ contains a character that is not allowed: {0:?}")]
    LocalCharacter(char),
    #[error("the part before the @ has a misplaced dot")]
    LocalDots,
    #[error("the domain is not valid: {0}")]
    Domain(&'static str),
}

impl EmailAddress {
    /// Parses user input; surrounding whitespace is forgiven, anything else odd is refused.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let s = input.trim_matches([' ', '\t']);
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().any(char::is_control) {
            return Err(EmailError::ControlCharacter);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(EmailError::Whitespace);
        }
        if !s.is_ascii() {
            return Err(EmailError::NonAscii);
        }
        if s.len() > MAX_TOTAL {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(EmailError::Shape);
        }
        parse_local(local)?;
        let domain = parse_domain(domain)?;
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes two addresses one subscriber: [`key`] of this one.
    pub fn key(&self) -> String {
        key(&self.0)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// The one normalisation under which addresses are the same subscriber: ASCII letters
/// lower-cased, in the local part too (`Mixed@EXAMPLE.COM`, `mixed@example.com` and
/// `MIXED@example.com` are one person; every mailbox provider of note treats local parts so,
/// though RFC 5321 allows otherwise). The address itself is kept as first given; the
/// database's unique index is on `lower(email)`, which agrees with this for the ASCII-only
/// addresses `EmailAddress` admits, and every lookup binds this key.
pub fn key(address: &str) -> String {
    address.trim_matches([' ', '\t']).to_ascii_lowercase()
}

/// RFC 5322 dot-atom: atext characters separated by single dots.
fn parse_local(local: &str) -> Result<(), EmailError> {
    if local.len() > MAX_LOCAL {
        return Err(EmailError::LocalTooLong);
    }
    if let Some(c) = local
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '.' || "!#$%&'*+-/=?^_`{|}~".contains(c)))
    {
        return Err(EmailError::LocalCharacter(c));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::LocalDots);
    }
    Ok(())
}

/// A DNS host name with at least two labels; returned lower-cased.
fn parse_domain(domain: &str) -> Result<String, EmailError> {
    if domain.len() > MAX_DOMAIN {
        return Err(EmailError::Domain("it is longer than 255 characters"));
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(EmailError::Domain("it needs a dot, as in example.com"));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(EmailError::Domain(
                "it has an empty label (two dots in a row?)",
            ));
        }
        if label.len() > MAX_LABEL {
            return Err(EmailError::Domain("a label is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(EmailError::Domain(
                "only letters, digits, hyphens and dots are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(EmailError::Domain("a label starts or ends with a hyphen"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(EmailError::Domain("an IP address is not a mail domain"));
    }
    Ok(domain)
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Replaces anything that looks like an email address in free text (an SMTP reply, an error)
/// with `<address>`, so logs above debug level never carry one.
pub fn redact_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                let trimmed = word.trim_matches(|c: char| "<>[](),;:'\"".contains(c));
                word.replacen(trimmed, "<address>", 1)
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_addresses_and_lowercases_the_domain_only() {
        let a = EmailAddress::parse("  Ada.Lovelace+news@Example.COM ").expect("valid");
        assert_eq!(a.as_str(), "Ada.Lovelace+news@example.com");
        assert_eq!(a.domain(), "example.com");
        assert!(EmailAddress::parse("x@sub.mail-host.example.org").is_ok());
        assert!(EmailAddress::parse("o'brien_{ok}@ex.io").is_ok());
    }

    #[test]
    fn refuses_hostile_and_malformed_input() {
        let cases = [
            ("", EmailError::Empty),
            ("a@b.com\r\nBcc: victim@x.com", EmailError::ControlCharacter),
            ("a@b.com\nX: y", EmailError::ControlCharacter),
            ("a\u{0}@b.com", EmailError::ControlCharacter),
            ("a\u{85}@b.com", EmailError::ControlCharacter),
            ("Ada <ada@example.com>", EmailError::Whitespace),
            ("<ada@example.com>", EmailError::LocalCharacter('<')),
            ("ada@exämple.com", EmailError::NonAscii),
            ("ada.example.com", EmailError::Shape),
            ("ada@", EmailError::Shape),
            ("@example.com", EmailError::Shape),
            ("a@b@example.com", EmailError::Shape),
            ("\"quoted\"@example.com", EmailError::LocalCharacter('"')),
            (".ada@example.com", EmailError::LocalDots),
            ("a..da@example.com", EmailError::LocalDots),
            (
                "ada@localhost",
                EmailError::Domain("it needs a dot, as in example.com"),
            ),
            (
                "ada@[127.0.0.1]",
                EmailError::Domain("only letters, digits, hyphens and dots are allowed"),
            ),
            (
                "ada@1.2.3.4",
                EmailError::Domain("an IP address is not a mail domain"),
            ),
            (
                "ada@-x.com",
                EmailError::Domain("a label starts or ends with a hyphen"),
            ),
            (
                "ada@x..com",
                EmailError::Domain("it has an empty label (two dots in a row?)"),
            ),
            ("ada(comment)@x.com", EmailError::LocalCharacter('(')),
        ];
        for (input, expected) in cases {
            assert_eq!(EmailAddress::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn redacts_addresses_from_free_text() {
        assert_eq!(
            redact_addresses("550 5.1.1 <ada@example.com>: Recipient address rejected"),
            "550 5.1.1 <<address>>: Recipient address rejected"
        );
        assert_eq!(redact_addresses("no address here"), "no address here");
    }

    #[test]
    fn enforces_rfc_5321_lengths() {
        let local = "a".repeat(65);
        assert_eq!(
            EmailAddress::parse(&format!("{local}@example.com")),
            Err(EmailError::LocalTooLong)
        );
        let label = "b".repeat(64);
        assert!(EmailAddress::parse(&format!("a@{label}.com")).is_err());
        let long = format!("a@{}.com", vec!["c".repeat(60); 5].join("."));
        assert_eq!(EmailAddress::parse(&long), Err(EmailError::TooLong));
        let fits = format!("{}@example.com", "d".repeat(64));
        assert!(EmailAddress::parse(&fits).is_ok());
    }

    #[test]
    fn casings_of_one_address_share_one_key_and_keep_their_spelling() {
        let a = EmailAddress::parse("Mixed@EXAMPLE.COM").expect("valid");
        let b = EmailAddress::parse("mixed@example.com").expect("valid");
        let c = EmailAddress::parse("MIXED@example.com").expect("valid");
        assert_eq!(a.key(), "mixed@example.com");
        assert_eq!(a.key(), b.key());
        assert_eq!(b.key(), c.key());
        assert_eq!(a.as_str(), "Mixed@example.com", "the local part as given");
        assert_eq!(key(" MIXED@example.com"), "mixed@example.com");
        assert_ne!(
            EmailAddress::parse("other@example.com")
                .expect("valid")
                .key(),
            a.key()
        );
    }
}
