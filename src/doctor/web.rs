//! The web side: `public_url`'s https, the one-click unsubscribe answer, the postal address.

use super::Check;

/// `public_url` is https: RFC 8058 one-click needs an https URL, and Gmail wants it.
pub fn check_public_url(url: &url::Url) -> Check {
    const NAME: &str = "public_url https";
    if url.scheme() == "https" {
        return Check::pass(NAME, url.as_str());
    }
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let detail = format!(
        "{url} is plain {}: unsubscribe links must be https (RFC 8058)",
        url.scheme()
    );
    let fix = "serve Squeeze behind TLS and set public_url = \"https://…\"";
    if local {
        Check::warn(NAME, format!("{detail}; fine for a local test"), fix)
    } else {
        Check::fail(NAME, detail, fix)
    }
}

/// What a POST of one-click unsubscribe with an unknown token got.
pub fn check_unsubscribe(url: &str, outcome: &Result<u16, String>) -> Check {
    const NAME: &str = "one-click unsubscribe";
    match outcome {
        Err(e) => Check::fail(
            NAME,
            format!("POST {url} failed: {e}"),
            "make public_url reach a running `squeeze serve`",
        ),
        // What Squeeze answers for a well-formed token it does not know.
        Ok(404) => Check::pass(
            NAME,
            format!("POST {url} answers as Squeeze does (404 for an unknown token)"),
        ),
        Ok(s) if *s >= 500 => Check::fail(
            NAME,
            format!("POST {url} answered {s}"),
            "look at the server's log; mailbox providers will get this error",
        ),
        Ok(s) if (200..300).contains(s) => Check::warn(
            NAME,
            format!("POST {url} answered {s} for an unknown token, where Squeeze answers 404"),
            "check that public_url points at Squeeze and not at another site",
        ),
        Ok(s) => Check::fail(
            NAME,
            format!("POST {url} answered {s}: a one-click POST would not unsubscribe"),
            "let POST /unsubscribe through to Squeeze (no login, redirect or origin check in front)",
        ),
    }
}

/// CAN-SPAM asks commercial mail for a physical postal address: a fail when real mail goes
/// out without one, a warning when mail only goes to the outbox.
pub fn check_postal_address(postal_address: Option<&str>, real_relay: bool) -> Check {
    const NAME: &str = "postal_address";
    let fix = "set postal_address = \"<street, city, country>\"";
    match postal_address {
        Some(a) => Check::pass(NAME, a),
        None if real_relay => Check::fail(
            NAME,
            "unset while smtp_url sends real mail: CAN-SPAM asks commercial mail for the sender's postal address",
            fix,
        ),
        None => Check::warn(
            NAME,
            "unset (mail goes to the outbox now; real mail needs it under CAN-SPAM)",
            fix,
        ),
    }
}
