//! What goes into each email: the template context and the list headers, in one place for
//! the worker (real sends) and the editors' preview (a sample subscriber).

use std::sync::Arc;
use std::time::Duration;

use minijinja::{Value, context};
use url::Url;

use crate::domain::clock::for_people;
use crate::domain::markdown::Markdown;
use crate::mail::{Content, ListHeaders, PartBody};
use crate::render::{RenderError, Rendered, Renderer};

mod prerender;

use prerender::{MANAGE_MARK, NAME_MARK, Prerendered, Shape, URL_MARK, reads_as};

/// The sample subscriber a preview is rendered for.
pub const SAMPLE_NAME: &str = "Sample Subscriber";
pub const SAMPLE_EMAIL: &str = "subscriber@example.com";
const SAMPLE_TOKEN: &str = "sample-unsubscribe-token-for-previews-only";

/// What composing needs to know of the configuration (built in `app`).
#[derive(Debug, Clone)]
pub struct ComposeSettings {
    /// The list's name as people see it (the From display name, or "Squeeze").
    pub list_name: String,
    /// RFC 2919 List-Id header value.
    pub list_id: String,
    /// The base of every link in an email.
    pub public_url: Url,
    /// `mailto:` URI offered in List-Unsubscribe besides the one-click URL.
    pub unsubscribe_mailto: Option<String>,
    /// How long a confirmation link is valid.
    pub confirmation_ttl: Duration,
    /// The sender's postal address, in every digest's footer (both parts).
    pub postal_address: Option<String>,
    /// The last field of every digest's Feedback-ID (Gmail's sender id): the From domain.
    pub feedback_sender: String,
    /// Sent digests are published at `/archive/<id>` and every digest email links there.
    pub archive: bool,
}

impl ComposeSettings {
    /// `public_url` joined with a path such as `/confirm`, and `?token=…`: the same link as
    /// `Config::link` makes.
    pub fn link(&self, path: &str, token: &str) -> String {
        let mut url = self.public_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.query_pairs_mut().clear().append_pair("token", token);
        url.into()
    }

    /// `public_url` joined with a path and nothing else (the public URL's own query and
    /// fragment left out): a link that carries nothing of anyone.
    pub fn page_link(&self, path: &str) -> String {
        let mut url = self.public_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.set_query(None);
        url.set_fragment(None);
        url.into()
    }
}

/// The path of a sent digest's public page: `/archive/<digest id>` (the id is its slug: it
/// never changes, and it is a UUID, which needs no escaping in a path).
pub fn archive_path(digest_id: &str) -> String {
    format!("/archive/{digest_id}")
}

#[derive(Clone)]
pub struct Composer {
    renderer: Arc<Renderer>,
    settings: Arc<ComposeSettings>,
    /// Every unsubscribe link up to its token (`…/unsubscribe?token=`), when the public URL
    /// lets the token simply go at the end (it has no fragment).
    unsubscribe_prefix: Option<String>,
    /// The same for the manage link (`…/manage?token=`).
    manage_prefix: Option<String>,
}

/// The path of the one-click unsubscribe link.
const UNSUBSCRIBE: &str = "/unsubscribe";
/// The path of the subscriber's own page (name, data export, leaving), by the same token.
pub const MANAGE: &str = "/manage";

/// A digest's content as a template value, built once per digest and shared by every email.
#[derive(Debug)]
pub struct DigestContent {
    pub id: String,
    subject: String,
    value: Value,
    /// The digest rendered once with stand-ins, per-subscriber values substituted per email;
    /// `None` when the templates do something with those values that substitution cannot
    /// reproduce (then every email is rendered in full).
    prerendered: std::sync::OnceLock<Option<Prerendered>>,
}

/// One item of a digest as the templates see it.
#[derive(Debug, Clone, Copy)]
pub struct ItemContent<'a> {
    pub title: &'a str,
    pub url: &'a str,
    pub summary: &'a str,
    pub source: Option<&'a str>,
}

impl From<Rendered> for Content {
    fn from(r: Rendered) -> Self {
        Self {
            subject: r.subject,
            text: PartBody::Text(r.text),
            html: PartBody::Text(r.html),
        }
    }
}

/// How long an inbox's preview line (the preheader) may be, in characters.
const PREHEADER_MAX: usize = 100;

impl DigestContent {
    /// The editor's intro and summaries are Markdown (`domain::markdown`), rendered here
    /// once per digest: the templates get `intro_html` / `intro_text`, each item's
    /// `summary_html` / `summary_text`, and the `preheader`; `intro` and `summary` stay the
    /// source as written (for templates of before the Markdown).
    pub fn new<'a>(
        id: &str,
        subject: &str,
        intro: Option<&str>,
        items: impl IntoIterator<Item = ItemContent<'a>>,
    ) -> Self {
        let mut first_title = None;
        let items: Vec<Value> = items
            .into_iter()
            .map(|i| {
                first_title.get_or_insert(i.title);
                let summary = Markdown::render(i.summary);
                context! {
                    title => i.title,
                    url => i.url,
                    summary => i.summary,
                    summary_html => Value::from_safe_string(summary.html),
                    summary_text => summary.text,
                    source => i.source,
                }
            })
            .collect();
        let intro_md = Markdown::render(intro.unwrap_or_default());
        // What an inbox shows after the subject: the intro's first words, or else the first
        // item's title.
        let preheader = match intro_md.summary_line(PREHEADER_MAX) {
            p if p.is_empty() => Markdown {
                words: first_title.unwrap_or_default().to_owned(),
                ..Markdown::default()
            }
            .summary_line(PREHEADER_MAX),
            p => p,
        };
        Self {
            id: id.to_owned(),
            subject: subject.to_owned(),
            value: context! {
                subject,
                intro,
                intro_html => Value::from_safe_string(intro_md.html),
                intro_text => intro_md.text,
                preheader,
                items,
            },
            prerendered: std::sync::OnceLock::new(),
        }
    }
}

impl Composer {
    pub fn new(renderer: Arc<Renderer>, settings: ComposeSettings) -> Self {
        let prefix = |path| Some(settings.link(path, "")).filter(|l| l.ends_with("?token="));
        let (unsubscribe_prefix, manage_prefix) = (prefix(UNSUBSCRIBE), prefix(MANAGE));
        Self {
            renderer,
            settings: Arc::new(settings),
            unsubscribe_prefix,
            manage_prefix,
        }
    }

    /// `config.link("/unsubscribe", token)`, put together from the part every link shares
    /// when form encoding leaves the token as it is (letters, digits, `*-._`: Squeeze's tokens
    /// are made of them). Parsing and serialising the URL for each email cost as much as
    /// writing the email's headers.
    fn unsubscribe_link(&self, token: &str) -> String {
        Self::quick_link(self.unsubscribe_prefix.as_deref(), token)
            .unwrap_or_else(|| self.settings.link(UNSUBSCRIBE, token))
    }

    /// `config.link("/manage", token)`, put together the same way.
    fn manage_link(&self, token: &str) -> String {
        Self::quick_link(self.manage_prefix.as_deref(), token)
            .unwrap_or_else(|| self.settings.link(MANAGE, token))
    }

    fn quick_link(prefix: Option<&str>, token: &str) -> Option<String> {
        let as_is = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
        prefix
            .filter(|_| token.bytes().all(as_is))
            .map(|p| format!("{p}{token}"))
    }

    /// The list's name as people see it: the From display name, or "Squeeze".
    pub fn list_name(&self) -> &str {
        &self.settings.list_name
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    pub fn confirmation(&self, name: Option<&str>, token: &str) -> Result<Rendered, RenderError> {
        self.renderer.email(
            "confirmation",
            context! {
                list_name => self.settings.list_name,
                name,
                confirm_url => self.settings.link("/confirm", token),
                valid_for => for_people(self.settings.confirmation_ttl),
                // What templates written before `valid_for` show.
                valid_hours => self.settings.confirmation_ttl.as_secs() / 3600,
            },
        )
    }

    /// The email a subscriber gets once they have confirmed, with the links to their page and
    /// to leave (and the one-click headers: they are on the list now).
    pub fn welcome(
        &self,
        name: Option<&str>,
        token: &str,
    ) -> Result<(Rendered, ListHeaders), RenderError> {
        let name = name.filter(|n| !n.is_empty());
        let unsubscribe_url = self.unsubscribe_link(token);
        let rendered = self.renderer.email(
            "welcome",
            context! {
                list_name => self.settings.list_name,
                name,
                unsubscribe_url,
                manage_url => self.manage_link(token),
            },
        )?;
        Ok((rendered, self.list_headers(unsubscribe_url, None)))
    }

    fn render_digest(
        &self,
        content: &DigestContent,
        name: Option<&str>,
        unsubscribe_url: &str,
        manage_url: &str,
    ) -> Result<Rendered, RenderError> {
        self.renderer.email(
            "digest",
            context! {
                list_name => self.settings.list_name,
                list_in_subject => self.names_list(&content.subject),
                name,
                unsubscribe_url,
                manage_url,
                postal_address => self.settings.postal_address,
                archive_url => self.archive_link(&content.id),
                ..content.value.clone()
            },
        )
    }

    /// Whether a subject already names the list (then the body's heading does not say it a
    /// second time above it, nor the text part's first line).
    fn names_list(&self, subject: &str) -> bool {
        let list = self.settings.list_name.trim().to_lowercase();
        !list.is_empty() && subject.to_lowercase().contains(&list)
    }

    /// Whether sent digests are published in the archive.
    pub fn archive_on(&self) -> bool {
        self.settings.archive
    }

    /// The digest's page in the archive, the same for every subscriber; `None` with the
    /// archive off (then no email links to it).
    pub fn archive_link(&self, digest_id: &str) -> Option<String> {
        self.settings
            .archive
            .then(|| self.settings.page_link(&archive_path(digest_id)))
    }

    /// Any public page's absolute address (the archive's feed links its pages by it).
    pub fn page_link(&self, path: &str) -> String {
        self.settings.page_link(path)
    }

    /// The digest's body (intro and items) as HTML, rendered by the very template the
    /// email's HTML part includes (`digest_body.html.j2`), for no one: no name, no token, no
    /// link of any subscriber's. The archive's page shows it in the site's layout.
    pub fn digest_body(&self, content: &DigestContent) -> Result<String, RenderError> {
        self.renderer.render(
            "digest_body.html.j2",
            context! { list_name => self.settings.list_name, ..content.value.clone() },
        )
    }

    /// Renders the digest once with stand-ins and keeps it only if substituting reproduces a
    /// full rendering exactly, for awkward sample values (with and without a name).
    fn prerender(&self, content: &DigestContent) -> Option<Prerendered> {
        let p = Prerendered {
            named: Shape::new(
                self.render_digest(content, Some(NAME_MARK), URL_MARK, MANAGE_MARK)
                    .ok()?,
            ),
            anonymous: Shape::new(
                self.render_digest(content, None, URL_MARK, MANAGE_MARK)
                    .ok()?,
            ),
        };
        let url = "https://example.test/unsubscribe?token=a&b=<c>";
        let manage = "https://example.test/manage?token=a&b=<c>";
        for name in [Some("Ada & <Bob> \"O'Neil\""), Some("Zoë"), None] {
            let full = self.render_digest(content, name, url, manage).ok()?;
            if !reads_as(&p.fill(name, url, manage), &full) {
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
        let manage_url = self.manage_link(unsubscribe_token);
        // Rendering 20 KB of template per email is most of the work; the only things that
        // differ between subscribers are the name and the links.
        let safe =
            |v: &str| !v.contains(NAME_MARK) && !v.contains(URL_MARK) && !v.contains(MANAGE_MARK);
        let prerendered = content.prerendered.get_or_init(|| self.prerender(content));
        let email = match prerendered {
            Some(p) if name.is_none_or(safe) && safe(&unsubscribe_url) && safe(&manage_url) => {
                p.fill(name, &unsubscribe_url, &manage_url)
            }
            _ => self
                .render_digest(content, name, &unsubscribe_url, &manage_url)?
                .into(),
        };
        Ok((
            email,
            self.list_headers(unsubscribe_url, Some(self.feedback_id(&content.id))),
        ))
    }

    /// A test of a digest for an editor's address: the subject marked "[Test] ", rendered in
    /// full for no one (no name), its unsubscribe and manage links (and List-Unsubscribe) to
    /// the page that says it was a test; no Feedback-ID (a complaint about a test is no
    /// signal about the digest).
    pub fn test_digest(
        &self,
        content: &DigestContent,
    ) -> Result<(Content, ListHeaders), RenderError> {
        let link = self.settings.page_link(crate::domain::test_send::PAGE);
        let mut rendered = self.render_digest(content, None, &link, &link)?;
        rendered.subject = crate::domain::test_send::subject(&rendered.subject);
        Ok((rendered.into(), self.list_headers(link, None)))
    }

    /// The list headers; `feedback_id` only for digests (Gmail traces complaints by it).
    fn list_headers(&self, unsubscribe_url: String, feedback_id: Option<String>) -> ListHeaders {
        ListHeaders {
            list_id: self.settings.list_id.clone(),
            unsubscribe_url,
            unsubscribe_mailto: self.settings.unsubscribe_mailto.clone(),
            feedback_id,
        }
    }

    /// Gmail's Feedback-ID (feedback loop): `<digest id>:<list>:digest:<sender id>`, where
    /// `<list>` is the List-Id's identifier (`news.example.com`) and `<sender id>` the From
    /// domain; Gmail reports complaints per field, so a spike is traced to one digest. A colon
    /// separates the fields, so none is left inside one.
    pub fn feedback_id(&self, digest_id: &str) -> String {
        let list = self
            .settings
            .list_id
            .rsplit_once('<')
            .map_or(self.settings.list_id.as_str(), |(_, id)| id)
            .trim_end_matches(['>', ' ']);
        let field = |v: &str| v.replace(':', "-");
        format!(
            "{}:{}:digest:{}",
            field(digest_id),
            field(list),
            field(&self.settings.feedback_sender)
        )
    }

    /// Exactly what a subscriber would receive, for a sample subscriber, rendered in full: a
    /// template error surfaces here, with the template's name and line, before anything is
    /// scheduled.
    pub fn preview(&self, content: &DigestContent) -> Result<(Rendered, ListHeaders), RenderError> {
        let unsubscribe_url = self.settings.link(UNSUBSCRIBE, SAMPLE_TOKEN);
        let manage_url = self.settings.link(MANAGE, SAMPLE_TOKEN);
        let rendered =
            self.render_digest(content, Some(SAMPLE_NAME), &unsubscribe_url, &manage_url)?;
        Ok((
            rendered,
            self.list_headers(unsubscribe_url, Some(self.feedback_id(&content.id))),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(public_url: &str) -> ComposeSettings {
        ComposeSettings {
            list_name: "Squeeze".into(),
            list_id: "Squeeze <newsletter.squeeze.localhost>".into(),
            public_url: public_url.parse().expect("url"),
            unsubscribe_mailto: None,
            confirmation_ttl: Duration::from_secs(48 * 3600),
            postal_address: Some("1 Main St, Springfield".into()),
            feedback_sender: "squeeze.localhost".into(),
            archive: true,
        }
    }

    fn composer(templates: &std::path::Path) -> Composer {
        let renderer = Renderer::load(templates).expect("templates");
        Composer::new(Arc::new(renderer), settings("http://127.0.0.1:8080"))
    }

    fn digest() -> DigestContent {
        let item = ItemContent {
            title: "Rust <2.0> & more",
            url: "https://example.com/?a=1&b=2",
            summary: "Short",
            source: None,
        };
        DigestContent::new("d", "Monday", None, [item])
    }

    fn shipped() -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
    }

    #[test]
    fn rendering_once_per_digest_gives_exactly_the_full_rendering() {
        let c = composer(&shipped());
        let content = digest();
        for (name, token, ascii) in [
            (Some("Zoë <b>&amp;</b>"), "tok-1", false),
            (None, "tok-2", true),
            (Some(""), "t", true),
            (Some("Ada O'Neil & <Co>"), "tok-3", true),
        ] {
            let (fast, _) = c.digest(&content, name, token).expect("fast");
            let url = c.settings.link("/unsubscribe", token);
            let manage = c.settings.link("/manage", token);
            let full = c
                .render_digest(&content, name.filter(|n| !n.is_empty()), &url, &manage)
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
            let renderer = Renderer::load(&shipped()).expect("templates");
            let c = Composer::new(Arc::new(renderer), settings(public_url));
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
                    c.settings.link(UNSUBSCRIBE, token),
                    "{public_url} {token:?}"
                );
                assert_eq!(
                    c.manage_link(token),
                    c.settings.link(MANAGE, token),
                    "{public_url} {token:?}"
                );
            }
        }
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
        let content = digest();
        let (r, _) = c.digest(&content, Some("ada"), "tok").expect("render");
        let text = r.text.to_text();
        assert!(text.starts_with("Hello ADA\n"), "{text}");
        assert!(
            matches!(content.prerendered.get(), Some(None)),
            "substitution was refused"
        );
    }
}
