//! What goes into each email: the template context and the list headers, in one place for
//! the worker (real sends) and the editors' preview (a sample subscriber).

use std::sync::Arc;

use minijinja::{Value, context};

use crate::config::Config;
use crate::mailer::{self, Content, ListHeaders, PartBody};
use crate::render::{RenderError, Rendered, Renderer};
use crate::store::DigestRow;

/// The sample subscriber a preview is rendered for.
pub const SAMPLE_NAME: &str = "Sample Subscriber";
pub const SAMPLE_EMAIL: &str = "subscriber@example.com";
const SAMPLE_TOKEN: &str = "sample-unsubscribe-token-for-previews-only";

#[derive(Clone)]
pub struct Composer {
    renderer: Arc<Renderer>,
    config: Arc<Config>,
    list_name: String,
    /// Every unsubscribe link up to its token (`…/unsubscribe?token=`), when the public URL
    /// lets the token simply go at the end (it has no fragment).
    unsubscribe_prefix: Option<String>,
}

/// Stand-ins for the per-subscriber values when a digest is rendered once (Unicode private-use
/// characters: nothing real contains them, and HTML escaping leaves them alone).
const NAME_MARK: &str = "\u{E000}";
const URL_MARK: &str = "\u{E001}";
/// The path of the one-click unsubscribe link.
const UNSUBSCRIBE: &str = "/unsubscribe";

/// A digest's content as a template value, built once per digest and shared by every email.
#[derive(Debug)]
pub struct DigestContent {
    pub id: String,
    value: Value,
    /// The digest rendered once with stand-ins, per-subscriber values substituted per email;
    /// `None` when the templates do something with those values that substitution cannot
    /// reproduce (then every email is rendered in full).
    prerendered: std::sync::OnceLock<Option<Prerendered>>,
}

/// The two shapes a digest email takes: for a subscriber with a name, and without.
#[derive(Debug)]
struct Prerendered {
    named: Shape,
    anonymous: Shape,
}

/// One shape of a digest email rendered with stand-ins, its bodies also cut at the stand-ins
/// with CRLF line ends, so an email's body is put together by copying.
#[derive(Debug)]
struct Shape {
    rendered: Rendered,
    text: Option<Holes>,
    html: Option<Holes>,
}

impl Shape {
    fn new(rendered: Rendered) -> Self {
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
    fn fill(&self, name: Option<&str>, url: &str) -> Content {
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
fn reads_as(c: &Content, r: &Rendered) -> bool {
    c.subject == r.subject && c.text.to_text() == r.text && c.html.to_text() == r.html
}

impl DigestContent {
    pub fn new(d: &DigestRow) -> Self {
        let items: Vec<Value> = d
            .items
            .iter()
            .map(|i| {
                context! {
                    title => i.title,
                    url => i.url,
                    summary => i.summary,
                    source => i.source,
                }
            })
            .collect();
        Self {
            id: d.id.clone(),
            value: context! { subject => d.subject, intro => d.intro, items },
            prerendered: std::sync::OnceLock::new(),
        }
    }
}

impl Composer {
    pub fn new(renderer: Arc<Renderer>, config: Arc<Config>) -> Self {
        let list_name = config
            .from
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Squeeze".to_owned());
        let unsubscribe_prefix =
            Some(config.link(UNSUBSCRIBE, "")).filter(|l| l.ends_with("?token="));
        Self {
            renderer,
            config,
            list_name,
            unsubscribe_prefix,
        }
    }

    /// `config.link("/unsubscribe", token)`, put together from the part every link shares
    /// when form encoding leaves the token as it is (letters, digits, `*-._`: Squeeze's tokens
    /// are made of them). Parsing and serialising the URL for each email cost as much as
    /// writing the email's headers.
    fn unsubscribe_link(&self, token: &str) -> String {
        let as_is = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
        match &self.unsubscribe_prefix {
            Some(prefix) if token.bytes().all(as_is) => format!("{prefix}{token}"),
            _ => self.config.link(UNSUBSCRIBE, token),
        }
    }

    /// The list's name as people see it: the From display name, or "Squeeze".
    pub fn list_name(&self) -> &str {
        &self.list_name
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    pub fn confirmation(&self, name: Option<&str>, token: &str) -> Result<Rendered, RenderError> {
        self.renderer.email(
            "confirmation",
            context! {
                list_name => self.list_name,
                name,
                confirm_url => self.config.link("/confirm", token),
                valid_hours => self.config.confirmation_ttl.as_secs() / 3600,
            },
        )
    }

    fn render_digest(
        &self,
        content: &DigestContent,
        name: Option<&str>,
        unsubscribe_url: &str,
    ) -> Result<Rendered, RenderError> {
        self.renderer.email(
            "digest",
            context! {
                list_name => self.list_name,
                name,
                unsubscribe_url,
                ..content.value.clone()
            },
        )
    }

    /// Renders the digest once with stand-ins and keeps it only if substituting reproduces a
    /// full rendering exactly, for awkward sample values (with and without a name).
    fn prerender(&self, content: &DigestContent) -> Option<Prerendered> {
        let p = Prerendered {
            named: Shape::new(
                self.render_digest(content, Some(NAME_MARK), URL_MARK)
                    .ok()?,
            ),
            anonymous: Shape::new(self.render_digest(content, None, URL_MARK).ok()?),
        };
        let url = "https://example.test/unsubscribe?token=a&b=<c>";
        for name in [Some("Ada & <Bob> \"O'Neil\""), Some("Zoë"), None] {
            let full = self.render_digest(content, name, url).ok()?;
            if !reads_as(&p.fill(name, url), &full) {
                tracing::info!(digest_id = %content.id, "templates transform the name or link; rendering each email in full");
                return None;
            }
        }
        Some(p)
    }

    /// One subscriber's copy of a digest, with its one-click unsubscribe headers.
    pub fn digest(
        &self,
        content: &DigestContent,
        name: Option<&str>,
        unsubscribe_token: &str,
    ) -> Result<(Content, ListHeaders), RenderError> {
        // An empty name is no name (sign-up never stores one; imports might).
        let name = name.filter(|n| !n.is_empty());
        let unsubscribe_url = self.unsubscribe_link(unsubscribe_token);
        // Rendering 20 KB of template per email is most of the work; the only things that
        // differ between subscribers are the name and the link.
        let safe = |v: &str| !v.contains(NAME_MARK) && !v.contains(URL_MARK);
        let prerendered = content.prerendered.get_or_init(|| self.prerender(content));
        let email = match prerendered {
            Some(p) if name.is_none_or(safe) && safe(&unsubscribe_url) => {
                p.fill(name, &unsubscribe_url)
            }
            _ => self.render_digest(content, name, &unsubscribe_url)?.into(),
        };
        Ok((email, self.list_headers(unsubscribe_url)))
    }

    fn list_headers(&self, unsubscribe_url: String) -> ListHeaders {
        ListHeaders {
            list_id: self.config.list_id.clone(),
            unsubscribe_url,
            unsubscribe_mailto: self.config.unsubscribe_mailto.clone(),
        }
    }

    /// Exactly what a subscriber would receive, for a sample subscriber, rendered in full: a
    /// template error surfaces here, with the template's name and line, before anything is
    /// scheduled.
    pub fn preview(&self, digest: &DigestRow) -> Result<(Rendered, ListHeaders), RenderError> {
        let content = DigestContent::new(digest);
        let unsubscribe_url = self.config.link(UNSUBSCRIBE, SAMPLE_TOKEN);
        let rendered = self.render_digest(&content, Some(SAMPLE_NAME), &unsubscribe_url)?;
        Ok((rendered, self.list_headers(unsubscribe_url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::ItemRow;

    fn composer(templates: &std::path::Path) -> Composer {
        let config = Config::load(
            None,
            vec![("templates".to_owned(), templates.display().to_string())],
        )
        .expect("config");
        let renderer = Renderer::load(templates).expect("templates");
        Composer::new(Arc::new(renderer), Arc::new(config))
    }

    fn digest() -> DigestRow {
        let item = ItemRow {
            id: "i".into(),
            title: "Rust <2.0> & more".into(),
            url: "https://example.com/?a=1&b=2".into(),
            summary: "Short".into(),
            source: None,
            status: "used".into(),
            digest_id: None,
            created_at: 0,
        };
        DigestRow {
            id: "d".into(),
            subject: "Monday".into(),
            intro: None,
            status: crate::domain::DigestStatus::Sending,
            paused_reason: None,
            send_at: None,
            daily_date: None,
            expires_at: None,
            recipients: None,
            started_at: None,
            finished_at: None,
            note: None,
            created_at: 0,
            item_count: 1,
            items: vec![item],
        }
    }

    fn shipped() -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
    }

    #[test]
    fn rendering_once_per_digest_gives_exactly_the_full_rendering() {
        let c = composer(&shipped());
        let content = DigestContent::new(&digest());
        for (name, token, ascii) in [
            (Some("Zoë <b>&amp;</b>"), "tok-1", false),
            (None, "tok-2", true),
            (Some(""), "t", true),
            (Some("Ada O'Neil & <Co>"), "tok-3", true),
        ] {
            let (fast, _) = c.digest(&content, name, token).expect("fast");
            let url = c.config.link("/unsubscribe", token);
            let full = c
                .render_digest(&content, name.filter(|n| !n.is_empty()), &url)
                .expect("full");
            assert!(reads_as(&fast, &full), "{name:?}: {fast:?}\n{full:?}");
            // Put together from pieces, ready for the wire: as 7bit when ASCII, else as 8bit.
            assert!(
                match fast.html {
                    PartBody::SevenBit(_) => ascii,
                    PartBody::EightBit(_) => !ascii,
                    PartBody::Text(_) => false,
                },
                "{name:?}: {:?}",
                fast.html
            );
        }
        assert!(
            matches!(content.prerendered.get(), Some(Some(_))),
            "the shipped templates prerender"
        );
    }

    #[test]
    fn unsubscribe_links_are_the_links_the_configuration_makes() {
        for public_url in [
            "https://news.example.com",
            "https://news.example.com/",
            "https://example.com/news/",
            "https://example.com/news?ref=mail",
            "https://example.com/news#top",
            "http://127.0.0.1:8080",
        ] {
            let config =
                Config::load(None, vec![("public_url".into(), public_url.into())]).expect("config");
            let renderer = Renderer::load(&shipped()).expect("templates");
            let c = Composer::new(Arc::new(renderer), Arc::new(config));
            for token in [
                "",
                "abcDEF0123",
                "a-b_c.d*e",
                "a b",
                "ü",
                "a&b=c",
                "%41",
                "#x",
            ] {
                assert_eq!(
                    c.unsubscribe_link(token),
                    c.config.link(UNSUBSCRIBE, token),
                    "{public_url} {token:?}"
                );
            }
        }
    }

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

    #[test]
    fn templates_that_transform_the_name_are_rendered_in_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(shipped()).expect("templates").flatten() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
        std::fs::write(
            dir.path().join("digest.txt.j2"),
            "Hello {{ name | default('friend') | upper }}\n{{ unsubscribe_url }}\n",
        )
        .expect("write");
        let c = composer(dir.path());
        let content = DigestContent::new(&digest());
        let (r, _) = c.digest(&content, Some("ada"), "tok").expect("render");
        let text = r.text.to_text();
        assert!(text.starts_with("Hello ADA\n"), "{text}");
        assert!(
            matches!(content.prerendered.get(), Some(None)),
            "substitution was refused"
        );
    }
}
