//! The prerender engine: a digest rendered once with stand-ins for the per-subscriber values
//! (name, unsubscribe link), cut at them, and filled in per email by copying.

use crate::mail::{self as mailer, Content, PartBody};
use crate::render::Rendered;

/// Stand-ins for the per-subscriber values when a digest is rendered once (Unicode private-use
/// characters: nothing real contains them, and HTML escaping leaves them alone).
pub(crate) const NAME_MARK: &str = "\u{E000}";
pub(crate) const URL_MARK: &str = "\u{E001}";

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
}

impl Mark {
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => NAME_MARK,
            Self::Url => URL_MARK,
        }
    }
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
        let plain = body.replace(NAME_MARK, "").replace(URL_MARK, "");
        if !mailer::fits_eight_bit(&plain) {
            return None;
        }
        let crlf = body.replace('\n', "\r\n");
        let (mut pieces, mut marks) = (Vec::new(), Vec::new());
        let mut rest = crlf.as_str();
        loop {
            let next = [Mark::Name, Mark::Url]
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
                .map(|l| l.matches(NAME_MARK).count() + l.matches(URL_MARK).count())
                .max()
                .unwrap_or(0),
        })
    }

    /// The body with these values, or `None` when it would not be valid 7bit or 8bit with
    /// them (line lengths count octets).
    fn fill(&self, name: &str, url: &str) -> Option<PartBody> {
        let fits = |v: &str| !v.contains(['\r', '\n', '\0']);
        let longest_value = name.len().max(url.len());
        if !fits(name)
            || !fits(url)
            || self.longest_line + self.most_marks_on_a_line * longest_value > mailer::MAX_LINE
        {
            return None;
        }
        let size =
            self.pieces.iter().map(String::len).sum::<usize>() + self.marks.len() * longest_value;
        let mut out = String::with_capacity(size);
        for (i, piece) in self.pieces.iter().enumerate() {
            out.push_str(piece);
            match self.marks.get(i) {
                Some(Mark::Name) => out.push_str(name),
                Some(Mark::Url) => out.push_str(url),
                None => {}
            }
        }
        Some(if self.ascii && name.is_ascii() && url.is_ascii() {
            PartBody::SevenBit(out.into_bytes())
        } else {
            PartBody::EightBit(out)
        })
    }
}

impl Prerendered {
    pub(crate) fn fill(&self, name: Option<&str>, url: &str) -> Content {
        let (shape, name) = match name {
            Some(n) => (&self.named, n),
            None => (&self.anonymous, ""),
        };
        let html_name = minijinja::HtmlEscape(name).to_string();
        let html_url = minijinja::HtmlEscape(url).to_string();
        let part = |holes: &Option<Holes>, template: &str, name: &str, url: &str| match holes
            .as_ref()
            .and_then(|h| h.fill(name, url))
        {
            Some(body) => body,
            None => PartBody::Text(template.replace(NAME_MARK, name).replace(URL_MARK, url)),
        };
        let r = &shape.rendered;
        Content {
            subject: r.subject.replace(NAME_MARK, name).replace(URL_MARK, url),
            text: part(&shape.text, &r.text, name, url),
            html: part(&shape.html, &r.html, &html_name, &html_url),
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

    #[test]
    fn a_body_is_cut_at_the_stand_ins_and_refuses_values_that_would_break_it() {
        let body = format!("Hi {NAME_MARK},\n<a href=\"{URL_MARK}\">leave</a>\n");
        let holes = Holes::cut(&body).expect("7bit apart from the stand-ins");
        assert_eq!(
            holes.fill("Ada", "https://x.test/u?t=1"),
            Some(PartBody::SevenBit(
                b"Hi Ada,\r\n<a href=\"https://x.test/u?t=1\">leave</a>\r\n".to_vec()
            ))
        );
        assert_eq!(
            holes.fill("Zoë", "u"),
            Some(PartBody::EightBit(
                "Hi Zoë,\r\n<a href=\"u\">leave</a>\r\n".into()
            )),
            "a value that is not ASCII makes the body 8bit"
        );
        assert!(holes.fill("a\r\nBcc: x", "u").is_none(), "line breaks");
        assert!(holes.fill("a\0", "u").is_none(), "NUL");
        assert!(
            holes.fill("Ada", &"u".repeat(990)).is_none(),
            "a line over 998 octets"
        );
        assert!(
            holes.fill(&"ü".repeat(496), "u").is_none(),
            "a line of 500 characters over 998 octets"
        );
        let greeting = Holes::cut(&format!("Grüße {NAME_MARK}\n")).expect("8bit");
        assert_eq!(
            greeting.fill("Ada", "u"),
            Some(PartBody::EightBit("Grüße Ada\r\n".into()))
        );
        assert!(
            Holes::cut(&format!("a\r{NAME_MARK}")).is_none(),
            "a CR of its own is neither 7bit nor 8bit"
        );
    }
}
