//! The prerender engine: a digest rendered once with stand-ins for the per-subscriber values
//! (name, unsubscribe link, manage link), cut at them, and filled in per email by copying.

use crate::mail::{self as mailer, Content, PartBody};
use crate::render::Rendered;

/// Stand-ins for the per-subscriber values when a digest is rendered once (Unicode private-use
/// characters: nothing real contains them, and HTML escaping leaves them alone).
pub(crate) const NAME_MARK: &str = "\u{E000}";
pub(crate) const URL_MARK: &str = "\u{E001}";
pub(crate) const MANAGE_MARK: &str = "\u{E002}";

/// The per-subscriber values a prerendered digest is filled with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub(crate) name: &'a str,
    pub(crate) url: &'a str,
    pub(crate) manage: &'a str,
}

const MARKS: [Mark; 3] = [Mark::Name, Mark::Url, Mark::Manage];

/// The two shapes a digest email takes: for a subscriber with a name, and without.
#[derive(Debug)]
pub(crate) struct Prerendered {
    pub(crate) named: Shape,
    pub(crate) anonymous: Shape,
}

/// One shape of a digest email rendered with stand-ins, its bodies also cut at the stand-ins
/// with CRLF line ends, so an email's body is put together by copying.
#[derive(Debug)]
pub(crate) struct Shape {
    rendered: Rendered,
    text: Option<Holes>,
    html: Option<Holes>,
}

impl Shape {
    pub(crate) fn new(rendered: Rendered) -> Self {
        Self {
            text: Holes::cut(&rendered.text),
            html: Holes::cut(&rendered.html),
            rendered,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Mark {
    Name,
    Url,
    Manage,
}

impl Mark {
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => NAME_MARK,
            Self::Url => URL_MARK,
            Self::Manage => MANAGE_MARK,
        }
    }

    fn value<'a>(self, v: &Values<'a>) -> &'a str {
        match self {
            Self::Name => v.name,
            Self::Url => v.url,
            Self::Manage => v.manage,
        }
    }
}

/// `s` with every stand-in replaced by its value.
fn replace_marks(s: &str, v: &Values<'_>) -> String {
    MARKS
        .into_iter()
        .fold(s.to_owned(), |s, m| s.replace(m.as_str(), m.value(v)))
}

/// A body cut at its stand-ins, line ends already CRLF: made only for a body that is 7bit or
/// 8bit apart from the stand-ins.
#[derive(Debug)]
struct Holes {
    /// The text around the stand-ins: one more piece than there are marks.
    pieces: Vec<String>,
    marks: Vec<Mark>,
    /// Whether the pieces are all ASCII (then so is an email whose values are).
    ascii: bool,
    /// The longest line with the stand-ins left out, and the most stand-ins on one line:
    /// together they bound the longest line once values are filled in.
    longest_line: usize,
    most_marks_on_a_line: usize,
}

impl Holes {
    fn cut(body: &str) -> Option<Self> {
        let plain = replace_marks(
            body,
            &Values {
                name: "",
                url: "",
                manage: "",
            },
        );
        if !mailer::fits_eight_bit(&plain) {
            return None;
        }
        let crlf = body.replace('\n', "\r\n");
        let (mut pieces, mut marks) = (Vec::new(), Vec::new());
        let mut rest = crlf.as_str();
        loop {
            let next = MARKS
                .into_iter()
                .filter_map(|m| rest.find(m.as_str()).map(|at| (at, m)))
                .min_by_key(|(at, _)| *at);
            let Some((at, mark)) = next else {
                pieces.push(rest.to_owned());
                break;
            };
            pieces.push(rest[..at].to_owned());
            marks.push(mark);
            rest = &rest[at + mark.as_str().len()..];
        }
        Some(Self {
            pieces,
            marks,
            ascii: plain.is_ascii(),
            longest_line: plain.split('\n').map(str::len).max().unwrap_or(0),
            most_marks_on_a_line: body
                .split('\n')
                .map(|l| MARKS.iter().map(|m| l.matches(m.as_str()).count()).sum())
                .max()
                .unwrap_or(0),
        })
    }

    /// The body with these values, or `None` when it would not be valid 7bit or 8bit with
    /// them (line lengths count octets).
    fn fill(&self, v: &Values<'_>) -> Option<PartBody> {
        let fits = |v: &str| !v.contains(['\r', '\n', '\0']);
        let values = [v.name, v.url, v.manage];
        let longest_value = values.iter().map(|s| s.len()).max().unwrap_or(0);
        if !values.iter().all(|s| fits(s))
            || self.longest_line + self.most_marks_on_a_line * longest_value > mailer::MAX_LINE
        {
            return None;
        }
        let size =
            self.pieces.iter().map(String::len).sum::<usize>() + self.marks.len() * longest_value;
        let mut out = String::with_capacity(size);
        for (i, piece) in self.pieces.iter().enumerate() {
            out.push_str(piece);
            if let Some(m) = self.marks.get(i) {
                out.push_str(m.value(v));
            }
        }
        Some(if self.ascii && values.iter().all(|s| s.is_ascii()) {
            PartBody::SevenBit(out.into_bytes())
        } else {
            PartBody::EightBit(out)
        })
    }
}

impl Prerendered {
    pub(crate) fn fill(&self, name: Option<&str>, url: &str, manage: &str) -> Content {
        let (shape, name) = match name {
            Some(n) => (&self.named, n),
            None => (&self.anonymous, ""),
        };
        let plain = Values { name, url, manage };
        let escape = |s: &str| minijinja::HtmlEscape(s).to_string();
        let (html_name, html_url, html_manage) = (escape(name), escape(url), escape(manage));
        let html = Values {
            name: &html_name,
            url: &html_url,
            manage: &html_manage,
        };
        let part = |holes: &Option<Holes>, template: &str, v: &Values<'_>| match holes
            .as_ref()
            .and_then(|h| h.fill(v))
        {
            Some(body) => body,
            None => PartBody::Text(replace_marks(template, v)),
        };
        let r = &shape.rendered;
        Content {
            subject: replace_marks(&r.subject, &plain),
            text: part(&shape.text, &r.text, &plain),
            html: part(&shape.html, &r.html, &html),
        }
    }
}

/// Whether an email says exactly what a full rendering says.
pub(crate) fn reads_as(c: &Content, r: &Rendered) -> bool {
    c.subject == r.subject && c.text.to_text() == r.text && c.html.to_text() == r.html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v<'a>(name: &'a str, url: &'a str) -> Values<'a> {
        Values {
            name,
            url,
            manage: "m",
        }
    }

    #[test]
    fn a_body_is_cut_at_the_stand_ins_and_refuses_values_that_would_break_it() {
        let body = format!("Hi {NAME_MARK},\n<a href=\"{URL_MARK}\">leave</a>\n");
        let holes = Holes::cut(&body).expect("7bit apart from the stand-ins");
        assert_eq!(
            holes.fill(&v("Ada", "https://x.test/u?t=1")),
            Some(PartBody::SevenBit(
                b"Hi Ada,\r\n<a href=\"https://x.test/u?t=1\">leave</a>\r\n".to_vec()
            ))
        );
        assert_eq!(
            holes.fill(&v("Zoë", "u")),
            Some(PartBody::EightBit(
                "Hi Zoë,\r\n<a href=\"u\">leave</a>\r\n".into()
            )),
            "a value that is not ASCII makes the body 8bit"
        );
        assert!(holes.fill(&v("a\r\nBcc: x", "u")).is_none(), "line breaks");
        assert!(holes.fill(&v("a\0", "u")).is_none(), "NUL");
        assert!(
            holes.fill(&v("Ada", &"u".repeat(990))).is_none(),
            "a line over 998 octets"
        );
        assert!(
            holes.fill(&v(&"ü".repeat(496), "u")).is_none(),
            "a line of 500 characters over 998 octets"
        );
        let greeting = Holes::cut(&format!("Grüße {NAME_MARK}\n")).expect("8bit");
        assert_eq!(
            greeting.fill(&v("Ada", "u")),
            Some(PartBody::EightBit("Grüße Ada\r\n".into()))
        );
        assert!(
            Holes::cut(&format!("a\r{NAME_MARK}")).is_none(),
            "a CR of its own is neither 7bit nor 8bit"
        );
    }
}
