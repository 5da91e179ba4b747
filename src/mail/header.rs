//! Header lines as lettre writes them, without lettre's per-word encoder where nothing needs
//! encoding: printable ASCII folded as lettre folds, the subject encoded once per digest, and
//! From/To mailboxes; anything else goes through lettre (RFC 2047, no CR or LF on the wire).

use std::fmt::Write as _;

use lettre::message::Mailbox;
use lettre::message::Mailboxes;
use lettre::message::header::{self, HeaderName, HeaderValue, Headers};

/// Header lines are folded before the word that would take a line past this many characters
/// (lettre's choice; RFC 5322 asks for 78 at most).
const HEADER_LINE: usize = 76;

/// Appends the header line `name: value` exactly as lettre encodes it. A value of printable
/// ASCII has nothing to encode, and lettre writes it as it is, folded: so does this, without
/// lettre's per-word encoder (BENCHMARKS.md, item 26). Anything else goes through lettre:
/// RFC 2047 for non-ASCII, and no CR or LF ever reaching the wire as a line break.
pub(super) fn push_header(head: &mut String, name: &'static str, value: &str) {
    if !printable_ascii(value) {
        let mut encoded = Headers::new();
        encoded.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            value.to_owned(),
        ));
        // Writing to a String cannot fail.
        let _ = write!(head, "{encoded}");
        return;
    }
    head.push_str(name);
    head.push_str(": ");
    push_folded(head, value, name.len() + ": ".len(), false);
    head.push_str("\r\n");
}

thread_local! {
    /// The last subject on this thread that needed lettre's encoder, and the line it wrote.
    static ENCODED_SUBJECT: std::cell::RefCell<(String, String)> =
        const { std::cell::RefCell::new((String::new(), String::new())) };
}

/// A header value that lettre writes as it is (folded): nothing in it to encode.
fn printable_ascii(value: &str) -> bool {
    value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// The `Subject:` line. One that is not printable ASCII (a dash, an emoji) is encoded once
/// and reused while the subject stays the same: every email of a digest has the same one,
/// unless it names the subscriber, and lettre's RFC 2047 encoder costs ~3,000 instructions.
pub(super) fn push_subject(head: &mut String, subject: &str) {
    if printable_ascii(subject) {
        push_header(head, "Subject", subject);
        return;
    }
    ENCODED_SUBJECT.with_borrow_mut(|(last, line)| {
        if last != subject {
            line.clear();
            push_header(line, "Subject", subject);
            subject.clone_into(last);
        }
        head.push_str(line);
    });
}

/// A `From:` or `To:` line with one mailbox, exactly as lettre's typed header writes it: the
/// address as it is, after a display name that is written plain (one word of letters, digits,
/// `-_.`), or quoted and folded (several such words). Any other name goes through lettre,
/// which escapes it or encodes it (RFC 2047).
pub(super) fn push_mailbox_header(head: &mut String, name: &'static str, mailbox: &Mailbox) {
    let address: &str = mailbox.email.as_ref();
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let quotable = |n: &str| n.bytes().all(|b| plain(b) || b == b' ');
    match mailbox.name.as_deref() {
        _ if !address.is_ascii() => {}
        None => {
            for part in [name, ": ", address, "\r\n"] {
                head.push_str(part);
            }
            return;
        }
        Some(display) if !display.is_empty() && display.bytes().all(plain) => {
            for part in [name, ": ", display, " <", address, ">\r\n"] {
                head.push_str(part);
            }
            return;
        }
        Some(display) if !display.is_empty() && quotable(display) => {
            head.push_str(name);
            head.push_str(": \"");
            push_folded(head, display, name.len() + ": \"".len(), true);
            for part in ["\" <", address, ">\r\n"] {
                head.push_str(part);
            }
            return;
        }
        Some(_) => {}
    }
    let mut encoded = Headers::new();
    match name {
        "From" => encoded.set(header::From::from(Mailboxes::from(mailbox.clone()))),
        _ => encoded.set(header::To::from(Mailboxes::from(mailbox.clone()))),
    }
    // Writing to a String cannot fail.
    let _ = write!(head, "{encoded}");
}

/// Writes printable ASCII `text` onto a header line already `line` characters long, folded
/// as lettre folds: before a word that would take the line past `HEADER_LINE`, where a space
/// precedes it and a word has been written on the line (`word_on_line`, at the start).
pub(super) fn push_folded(head: &mut String, text: &str, mut line: usize, mut word_on_line: bool) {
    // Spaces not written yet: a fold goes before them, so they start the next line.
    let mut spaces = 0;
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(' ') {
            spaces += 1;
            rest = after;
            continue;
        }
        let (word, after) = rest.split_at(rest.find(' ').unwrap_or(rest.len()));
        if word_on_line && spaces > 0 && line + spaces + word.len() > HEADER_LINE {
            head.push_str("\r\n");
            line = 0;
        }
        head.extend(std::iter::repeat_n(' ', spaces));
        head.push_str(word);
        line += spaces + word.len();
        spaces = 0;
        word_on_line = true;
        rest = after;
    }
    head.extend(std::iter::repeat_n(' ', spaces));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path for printable ASCII must write exactly what lettre writes: the same
    /// folds, the same spaces. Checked over every value of up to four words from a set of
    /// lengths around the fold, with runs of spaces between, before and after them.
    #[test]
    fn headers_are_written_as_lettre_encodes_them() {
        let words: Vec<String> = [1, 9, 30, 45, 58, 66, 70, 71, 76, 90]
            .iter()
            .map(|&n| "x".repeat(n))
            .chain(
                [
                    "=?utf-8?q?x?=",
                    "<https://e.example/u?t=ab>,",
                    "Zoë",
                    "tab\there",
                ]
                .map(String::from),
            )
            .collect();
        let lettre = |name: &'static str, value: &str| {
            let mut h = Headers::new();
            h.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.to_owned(),
            ));
            h.to_string()
        };
        let mut values = vec![String::new()];
        for _ in 0..3 {
            let mut longer = Vec::new();
            for v in &values {
                for w in &words {
                    for sep in [" ", "  "] {
                        longer.push(format!("{v}{sep}{w}"));
                    }
                }
            }
            values.extend(longer);
        }
        let mut checked = 0;
        for v in &values {
            for value in [v.trim_start().to_owned(), v.clone(), format!("{v}  ")] {
                for name in ["Subject", "List-Unsubscribe"] {
                    let mut ours = String::new();
                    push_header(&mut ours, name, &value);
                    assert_eq!(ours, lettre(name, &value), "{name}: {value:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
        // A line break in a value never starts a header of its own.
        let mut injected = String::new();
        push_header(&mut injected, "Subject", "Hi\r\nBcc: evil@example.com");
        assert!(!injected.contains("\r\nBcc"), "{injected:?}");
    }

    /// A subject encoded once and reused must be the subject of the email at hand: the same
    /// line as lettre writes, through changes of subject, back and forth, and to ASCII.
    #[test]
    fn each_subject_line_is_its_own_subject_encoded() {
        let lettre = |value: &str| {
            let mut h = Headers::new();
            h.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("Subject"),
                value.to_owned(),
            ));
            h.to_string()
        };
        let subjects = [
            "Montag — die Woche 🍊",
            "Montag — die Woche 🍊",
            "Hi Zoë — your digest",
            "Montag — die Woche 🍊",
            "Plain ASCII",
            "Hi Ünal — your digest",
            "Hi Ünal — your digest",
        ];
        for subject in subjects {
            let mut ours = String::new();
            push_subject(&mut ours, subject);
            assert_eq!(ours, lettre(subject), "{subject}");
        }
    }

    /// From and To lines must be what lettre's typed headers write, for every kind of
    /// display name: none, one plain word, several words (quoted, folded when long), and the
    /// ones lettre escapes or encodes.
    #[test]
    fn mailbox_headers_are_written_as_lettre_encodes_them() {
        let names: Vec<Option<String>> = [
            None,
            Some(""),
            Some("Ada"),
            Some("ada.lovelace-1_x"),
            Some("Ada Lovelace"),
            Some(" Ada  Lovelace "),
            Some("Freshly Squeezed"),
            Some("Zoë Ünal"),
            Some("O'Brien, Pat"),
            Some("say \"hi\""),
            Some("back\\slash"),
        ]
        .into_iter()
        .map(|n| n.map(String::from))
        .chain((1..=12).map(|n| Some(vec!["Wordy"; n * 3].join(" "))))
        .chain([Some("x".repeat(80)), Some(format!("a {}", "y".repeat(75)))])
        // Two words whose line ends on either side of the fold, for both header names.
        .chain((60..=75).map(|n| Some(format!("n {}", "m".repeat(n)))))
        .collect();
        let addresses = [
            "ada@example.org",
            "a.very.long.local.part.for.folding.tests@subdomain.example-newsletters.org",
        ];
        for header in ["From", "To"] {
            for name in &names {
                for address in addresses {
                    let mailbox = Mailbox::new(name.clone(), address.parse().expect("address"));
                    let mut theirs = Headers::new();
                    match header {
                        "From" => theirs.set(header::From::from(Mailboxes::from(mailbox.clone()))),
                        _ => theirs.set(header::To::from(Mailboxes::from(mailbox.clone()))),
                    }
                    let mut ours = String::new();
                    push_mailbox_header(&mut ours, header, &mailbox);
                    assert_eq!(ours, theirs.to_string(), "{header}: {name:?} <{address}>");
                }
            }
        }
    }
}
