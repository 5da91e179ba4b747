//! Bounces and complaints heard after sending: the VERP return path (making and checking
//! its token), what a report is, and the rules that decide what it does to a subscriber and
//! a digest. Pure: the parser (`inbound`) makes reports, the store records them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::clock::Millis;
use super::smtp::{self, Verdict};

/// How many hex digits of the MAC a token carries: 64 bits, past guessing one try at a time.
const MAC_HEX: usize = 16;
/// The longest local part SMTP allows (RFC 5321, 4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// The longest id a token carries: a fan-out id (a UUID, `-`, 12 hex digits) as 22 bytes
/// in lower-case base32.
const MAX_ID: usize = 36;

/// The shortest `bounce_secret` accepted.
pub const MIN_SECRET: usize = 32;

/// The VERP return path: `local+<token>@domain`, where the token names the delivery and
/// carries a MAC of it under a secret, so a bounce can name only a delivery Squeeze sent.
///
/// The token is lower-case letters, digits and `-` only (some MTAs lower-case local parts):
/// `<delivery id's bytes in lower-case base32>-<16 hex digits of HMAC-SHA256(secret, id)>`,
/// so `local+token` fits the 64 characters of a local part. Delivery ids are UUIDs, or a
/// UUID, `-` and 12 hex digits (the fan-out's).
#[derive(Clone)]
pub struct Verp {
    local: String,
    domain: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Verp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verp")
            .field("address", &format!("{}@{}", self.local, self.domain))
            .finish_non_exhaustive()
    }
}

impl Verp {
    /// `address` is the plain bounce address (`bounces@bounce.example.com`); the secret at
    /// least [`MIN_SECRET`] characters. `Err` says what is wrong, in a phrase.
    pub fn new(address: &str, secret: &str) -> Result<Self, String> {
        let (local, domain) = address
            .rsplit_once('@')
            .filter(|(l, d)| !l.is_empty() && d.contains('.') && !l.contains('+'))
            .ok_or("expected an address like bounces@bounce.example.com, without a `+`")?;
        if local.len() + 2 + MAX_ID + MAC_HEX > MAX_LOCAL {
            return Err(format!(
                "the part before the @ may have at most {} characters, so that the token fits",
                MAX_LOCAL - 2 - MAX_ID - MAC_HEX
            ));
        }
        if secret.len() < MIN_SECRET {
            return Err(format!("use at least {MIN_SECRET} characters"));
        }
        Ok(Self {
            local: local.to_owned(),
            domain: domain.to_ascii_lowercase(),
            secret: secret.as_bytes().to_vec(),
        })
    }

    fn mac(&self, delivery_id: &str) -> String {
        // HMAC takes a key of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable_key(),
        };
        mac.update(delivery_id.as_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut out = String::with_capacity(MAC_HEX);
        for b in bytes.iter().take(MAC_HEX / 2) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The token of a delivery; `None` for an id that cannot go in a local part as it is.
    /// The domain bounces come back to: the envelope sender's domain, whose SPF counts.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn token(&self, delivery_id: &str) -> Option<String> {
        let id = delivery_id.to_ascii_lowercase();
        let compact = compact_uuid(&id)?;
        (compact.len() <= MAX_ID).then(|| format!("{compact}-{}", self.mac(&id)))
    }

    /// The envelope sender of a delivery: `local+token@domain`, or the plain bounce address
    /// for an id that cannot be carried.
    pub fn return_path(&self, delivery_id: &str) -> String {
        match self.token(delivery_id) {
            Some(t) => format!("{}+{t}@{}", self.local, self.domain),
            None => format!("{}@{}", self.local, self.domain),
        }
    }

    /// The delivery id a token names, when its MAC is right (compared in constant time).
    /// Case does not matter: an MTA may have lower- or upper-cased it.
    pub fn verify(&self, token: &str) -> Option<String> {
        use subtle::ConstantTimeEq as _;
        let token = token.trim().to_ascii_lowercase();
        let (id, mac) = token.rsplit_once('-')?;
        if mac.len() != MAC_HEX || id.is_empty() {
            return None;
        }
        let id = expand_uuid(id)?;
        let expected = self.mac(&id);
        bool::from(expected.as_bytes().ct_eq(mac.as_bytes())).then_some(id)
    }

    /// The token in a recipient address of the bounce domain (`local+token@domain`), if it
    /// is one of ours; not verified.
    pub fn token_in<'a>(&self, address: &'a str) -> Option<&'a str> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = address.rsplit_once('@')?;
        let (base, token) = local.split_once('+')?;
        (base.eq_ignore_ascii_case(&self.local) && domain.eq_ignore_ascii_case(&self.domain))
            .then_some(token)
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A delivery id (UUID, or UUID-12 hex) -> its bytes in lower-case base32, no padding.
fn compact_uuid(id: &str) -> Option<String> {
    let b = id.as_bytes();
    let uuid_shape = |b: &[u8]| b.len() >= 36 && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-');
    let shaped =
        (b.len() == 36 && uuid_shape(b)) || (b.len() == 49 && uuid_shape(b) && b[36] == b'-');
    if !shaped {
        return None;
    }
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    Some(out)
}

/// The other way round: base32 of 16 or 22 bytes -> the id's usual form.
fn expand_uuid(compact: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in compact.bytes() {
        let v = BASE32.iter().position(|b| *b == c)? as u32;
        acc = ((acc << 5) | v) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push(((acc >> bits) & 0xff) as u8);
        }
    }
    if !matches!(bytes.len(), 16 | 22) {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    if hex.len() == 44 {
        id.push('-');
        id.push_str(&hex[32..]);
    }
    // Only the one spelling of an id: no trailing bits, so no two tokens name one delivery.
    (compact_uuid(&id).as_deref() == Some(compact)).then_some(id)
}

#[cold]
fn unreachable_key() -> ! {
    // `Hmac::new_from_slice` refuses no key length; a panic here would be a bug in hmac.
    panic!("HMAC accepts keys of any length")
}

/// What kind of report arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// A delivery status notification (RFC 3464) or a bounce text with a status code.
    Bounce,
    /// A feedback report (RFC 5965 ARF, or a provider's complaint).
    Complaint,
}

/// One report heard after sending, as the parser or a provider's webhook makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: ReportKind,
    /// The enhanced status code (RFC 3463), `5.1.1`.
    pub status: Option<String>,
    /// `Action:` of a DSN (`failed`, `delayed`, `delivered`, …), lower-cased.
    pub action: Option<String>,
    /// The receiver's words (`Diagnostic-Code:`, the bounce text, the feedback type).
    pub diagnostic: Option<String>,
    /// The address that bounced or complained (Final-Recipient, the original To).
    pub recipient: Option<String>,
    /// The Message-ID of the returned message, without angle brackets.
    pub message_id: Option<String>,
    /// The VERP token of the address the report was sent to.
    pub verp_token: Option<String>,
    pub received_at: Millis,
    /// Where it came from: `inbound` (the MTA's pipe), or a provider's name.
    pub source: String,
}

/// What a report means, decided by [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceKind {
    /// The address is dead (5.1.x, 5.2.1): the subscriber is bounced at once.
    Hard,
    /// Worth counting (4.x.x, 5.2.2 mailbox full, other 5.x.x): three in a row bounce.
    Soft,
    /// The sender's problem (5.7.x, 4.7.x: authentication, DMARC, spam, reputation): the
    /// subscriber is left alone, the digest's auto-pause counts it.
    Policy,
    /// "This is spam": the subscriber is unsubscribed at once.
    Complaint,
    /// Nothing to act on (a delay warning, a success notice, no status at all).
    Ignored,
}

impl BounceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
            Self::Policy => "policy",
            Self::Complaint => "complaint",
            Self::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Hard,
            Self::Soft,
            Self::Policy,
            Self::Complaint,
            Self::Ignored,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a report means. The status goes through the one SMTP classification
/// (`domain::smtp::classify`) as its reply would have; on top of it: 4.7.x (bulk-sender,
/// reputation) is policy, 5.2.1 (mailbox disabled) is hard, and a 4.x.x is never hard.
pub fn classify(report: &Report) -> BounceKind {
    if report.kind == ReportKind::Complaint {
        return BounceKind::Complaint;
    }
    if let Some(action) = &report.action
        && action != "failed"
    {
        // delayed, delivered, relayed, expanded: the message may yet arrive, or did.
        return BounceKind::Ignored;
    }
    let Some(status) = report.status.as_deref().filter(|s| is_status(s)) else {
        return BounceKind::Ignored;
    };
    let diagnostic = report.diagnostic.as_deref().unwrap_or("");
    classify_status(status, diagnostic)
}

/// A status code and the receiver's words -> what they mean (see [`classify`]).
pub fn classify_status(status: &str, diagnostic: &str) -> BounceKind {
    if status.starts_with("4.7.") {
        return BounceKind::Policy;
    }
    if status.starts_with('4') {
        return BounceKind::Soft;
    }
    if status == "5.2.1" {
        return BounceKind::Hard;
    }
    // The status as the first word of a 5xx reply, as a relay would have said it.
    let text = format!("{status} {diagnostic}");
    match smtp::classify(Some(550), &text) {
        Verdict::HardBounce if !matches!(status, "5.1.7" | "5.1.8") => BounceKind::Hard,
        Verdict::HardBounce | Verdict::PolicyRejection => BounceKind::Policy,
        _ => BounceKind::Soft,
    }
}

/// `4.x.x` or `5.x.x` (RFC 3463: class, subject, detail; each a number).
pub fn is_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let class_ok = matches!(parts.next(), Some("4" | "5"));
    let rest: Vec<&str> = parts.collect();
    class_ok
        && rest.len() == 2
        && rest
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What was heard of one of a subscriber's deliveries, for the soft-bounce rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Sent, and no bounce heard of it: a successful delivery.
    Delivered,
    /// A soft bounce came back for it.
    SoftBounce,
    /// Anything else (failed at send time, a policy rejection, still queued): neither
    /// counts nor resets.
    Neutral,
}

/// How many soft bounces in a subscriber's last [`SOFT_WINDOW`] deliveries bounce them.
pub const SOFT_LIMIT: usize = 3;
pub const SOFT_WINDOW: usize = 5;

/// The soft-bounce rule: over the subscriber's last five deliveries up to the one that just
/// soft-bounced, newest first, three soft bounces bounce the subscriber; a successful
/// delivery resets the count (only soft bounces newer than it count).
pub fn soft_bounces_bounce(newest_first: &[Heard]) -> bool {
    newest_first
        .iter()
        .take(SOFT_WINDOW)
        .take_while(|h| **h != Heard::Delivered)
        .filter(|h| **h == Heard::SoftBounce)
        .count()
        >= SOFT_LIMIT
}

/// The complaint-rate (and policy-rate) rule: `count` of `delivered` is past `share` once at
/// least `min` were delivered; a share of 0 disables it.
pub fn rate_exceeded(count: i64, delivered: i64, share: f64, min: i64) -> bool {
    share > 0.0 && delivered > 0 && delivered >= min && (count as f64) > share * delivered as f64
}

/// The reason a digest pauses itself for its complaints.
pub fn complaint_pause_reason(complaints: i64, delivered: i64, share: f64) -> String {
    format!(
        "paused automatically: {complaints} complaints for {delivered} delivered emails \
         exceed the complaint rate of {:.2}%",
        share * 100.0
    )
}

/// The reason a digest pauses itself for policy rejections heard after sending.
pub fn policy_pause_reason(rejections: i64, delivered: i64, last: &str) -> String {
    format!(
        "paused automatically: {rejections} of {delivered} delivered emails were rejected \
         for policy or reputation reasons (last: {last})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verp() -> Verp {
        Verp::new("bounces@Bounce.Example.com", &"s".repeat(32)).expect("valid")
    }

    fn report(status: &str, action: Option<&str>, diagnostic: &str) -> Report {
        Report {
            kind: ReportKind::Bounce,
            status: Some(status.to_owned()),
            action: action.map(str::to_owned),
            diagnostic: Some(diagnostic.to_owned()),
            recipient: None,
            message_id: None,
            verp_token: None,
            received_at: 0,
            source: "test".into(),
        }
    }

    #[test]
    fn a_token_names_its_delivery_and_survives_case_changes() {
        let v = verp();
        let id = "0192f0c4-5b1e-7c3a-9d2e-1a2b3c4d5e6f";
        let fan_out = "0192f0c4-5b1e-7c3a-9d2e-1a2b3c4d5e6f-00000000002a";
        let path = v.return_path(fan_out);
        let token = v.token_in(&path).expect("ours");
        assert_eq!(v.verify(token).as_deref(), Some(fan_out));
        assert!(
            path.split('@').next().is_some_and(|l| l.len() <= 64),
            "{path}"
        );
        let path = v.return_path(id);
        assert!(path.starts_with("bounces+"));
        assert!(path.split('@').next().is_some_and(|l| l.len() <= 64));
        assert!(path.ends_with("@bounce.example.com"));
        let token = v.token_in(&path).expect("ours");
        assert_eq!(v.verify(token).as_deref(), Some(id));
        assert_eq!(v.verify(&token.to_ascii_uppercase()).as_deref(), Some(id));
        assert_eq!(
            v.token_in(&path.to_ascii_uppercase()).map(str::to_owned),
            Some(token.to_ascii_uppercase())
        );
    }

    #[test]
    fn a_forged_or_foreign_token_names_nothing() {
        let v = verp();
        let token = v
            .token("0192f0c4-5b1e-7c3a-9d2e-1a2b3c4d5e6f")
            .expect("fits");
        let mut forged = token.clone();
        let last = forged.pop().expect("not empty");
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(v.verify(&forged), None);
        // The MAC of another id does not fit this one.
        let other = v
            .token("0192f0c4-5b1e-7c3a-9d2e-1a2b3c4d5e70")
            .expect("fits");
        let (_, mac) = other.rsplit_once('-').expect("has a mac");
        let (id, _) = token.rsplit_once('-').expect("has an id");
        assert_eq!(v.verify(&format!("{id}-{mac}")), None);
        // Another secret makes other tokens.
        let w = Verp::new("bounces@bounce.example.com", &"t".repeat(32)).expect("valid");
        assert_eq!(w.verify(&token), None);
        for junk in ["", "-", "abc", "x-0123456789abcdef", "-0123456789abcdef"] {
            assert_eq!(v.verify(junk), None, "{junk:?}");
        }
        assert_eq!(v.token_in("bounces+x@other.example.com"), None);
        assert_eq!(v.token_in("other+x@bounce.example.com"), None);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Verp::new("bounces@bounce.example.com", "short").is_err());
        assert!(Verp::new("no-at-sign", &"s".repeat(32)).is_err());
        assert!(Verp::new("a+b@bounce.example.com", &"s".repeat(32)).is_err());
        assert!(Verp::new("a-long-bounce-local@bounce.example.com", &"s".repeat(32)).is_err());
        assert!(verp().token("Not Fit!").is_none());
        assert_eq!(verp().return_path("Not Fit!"), "bounces@bounce.example.com");
    }

    #[test]
    fn hard_bounces_are_the_dead_address_codes() {
        for s in ["5.1.1", "5.1.0", "5.1.10", "5.1.2", "5.2.1"] {
            assert_eq!(classify_status(s, ""), BounceKind::Hard, "{s}");
        }
        assert_eq!(classify_status("5.0.0", "User unknown"), BounceKind::Hard);
    }

    #[test]
    fn a_4xx_is_never_hard() {
        for s in ["4.1.1", "4.2.1", "4.2.2", "4.0.0", "4.4.7"] {
            assert_eq!(classify_status(s, "user unknown"), BounceKind::Soft, "{s}");
        }
    }

    #[test]
    fn soft_bounces_are_full_mailboxes_and_other_permanent_trouble() {
        assert_eq!(classify_status("5.2.2", "mailbox full"), BounceKind::Soft);
        assert_eq!(classify_status("5.4.4", "no route"), BounceKind::Soft);
        assert_eq!(classify_status("5.0.0", "disk quota"), BounceKind::Soft);
    }

    #[test]
    fn policy_and_reputation_rejections_are_the_senders_problem() {
        for s in [
            "5.7.1", "5.7.26", "5.7.515", "4.7.0", "4.7.28", "5.1.8", "5.1.7",
        ] {
            assert_eq!(classify_status(s, ""), BounceKind::Policy, "{s}");
        }
    }

    #[test]
    fn only_a_failed_action_with_a_status_counts() {
        assert_eq!(
            classify(&report("5.1.1", Some("failed"), "")),
            BounceKind::Hard
        );
        assert_eq!(classify(&report("5.1.1", None, "")), BounceKind::Hard);
        for a in ["delayed", "delivered", "relayed", "expanded"] {
            assert_eq!(classify(&report("4.4.7", Some(a), "")), BounceKind::Ignored);
        }
        assert_eq!(classify(&report("2.0.0", None, "")), BounceKind::Ignored);
        assert_eq!(classify(&report("5.x.1", None, "")), BounceKind::Ignored);
        let mut complaint = report("", None, "abuse");
        complaint.kind = ReportKind::Complaint;
        assert_eq!(classify(&complaint), BounceKind::Complaint);
    }

    #[test]
    fn three_soft_bounces_in_five_deliveries_bounce_and_a_success_resets() {
        use Heard::*;
        assert!(soft_bounces_bounce(&[SoftBounce, SoftBounce, SoftBounce]));
        assert!(soft_bounces_bounce(&[
            SoftBounce, Neutral, SoftBounce, Neutral, SoftBounce
        ]));
        assert!(!soft_bounces_bounce(&[SoftBounce, SoftBounce]));
        assert!(!soft_bounces_bounce(&[
            SoftBounce, SoftBounce, Delivered, SoftBounce
        ]));
        // Only the last five count.
        assert!(!soft_bounces_bounce(&[
            SoftBounce, Neutral, Neutral, Neutral, SoftBounce, SoftBounce
        ]));
    }

    #[test]
    fn the_rate_rule_waits_for_enough_mail_and_zero_disables_it() {
        assert!(!rate_exceeded(3, 999, 0.003, 1000));
        assert!(!rate_exceeded(3, 1000, 0.003, 1000));
        assert!(rate_exceeded(4, 1000, 0.003, 1000));
        assert!(!rate_exceeded(1000, 1000, 0.0, 1000));
        assert!(!rate_exceeded(1, 0, 0.5, 0));
    }
}
