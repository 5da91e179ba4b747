//! What goes into each email: the template context and the list headers, in one place for
//! the worker (real sends) and the editors' preview (a sample subscriber).

use std::sync::Arc;

use minijinja::{Value, context};

use crate::config::Config;
use crate::mailer::ListHeaders;
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
}

/// Stand-ins for the per-subscriber values when a digest is rendered once (Unicode private-use
/// characters: nothing real contains them, and HTML escaping leaves them alone).
const NAME_MARK: &str = "\u{E000}";
const URL_MARK: &str = "\u{E001}";

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
    named: Rendered,
    anonymous: Rendered,
}

impl Prerendered {
    fn fill(&self, name: Option<&str>, url: &str) -> Rendered {
        let (r, name) = match name {
            Some(n) => (&self.named, n),
            None => (&self.anonymous, ""),
        };
        let html_name = minijinja::HtmlEscape(name).to_string();
        let html_url = minijinja::HtmlEscape(url).to_string();
        Rendered {
            subject: r.subject.replace(NAME_MARK, name).replace(URL_MARK, url),
            html: r
                .html
                .replace(NAME_MARK, &html_name)
                .replace(URL_MARK, &html_url),
            text: r.text.replace(NAME_MARK, name).replace(URL_MARK, url),
        }
    }
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
        Self {
            renderer,
            config,
            list_name,
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
            named: self
                .render_digest(content, Some(NAME_MARK), URL_MARK)
                .ok()?,
            anonymous: self.render_digest(content, None, URL_MARK).ok()?,
        };
        let url = "https://example.test/unsubscribe?token=a&b=<c>";
        for name in [Some("Ada & <Bob> \"O'Neil\""), None] {
            let full = self.render_digest(content, name, url).ok()?;
            if p.fill(name, url) != full {
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
    ) -> Result<(Rendered, ListHeaders), RenderError> {
        // An empty name is no name (sign-up never stores one; imports might).
        let name = name.filter(|n| !n.is_empty());
        let unsubscribe_url = self.config.link("/unsubscribe", unsubscribe_token);
        // Rendering 20 KB of template per email is most of the work; the only things that
        // differ between subscribers are the name and the link.
        let safe = |v: &str| !v.contains(NAME_MARK) && !v.contains(URL_MARK);
        let prerendered = content.prerendered.get_or_init(|| self.prerender(content));
        let rendered = match prerendered {
            Some(p) if name.is_none_or(safe) && safe(&unsubscribe_url) => {
                p.fill(name, &unsubscribe_url)
            }
            _ => self.render_digest(content, name, &unsubscribe_url)?,
        };
        let list = ListHeaders {
            list_id: self.config.list_id.clone(),
            unsubscribe_url,
            unsubscribe_mailto: self.config.unsubscribe_mailto.clone(),
        };
        Ok((rendered, list))
    }

    /// Exactly what a subscriber would receive, for a sample subscriber. A template error
    /// surfaces here, with the template's name and line, before anything is scheduled.
    pub fn preview(&self, digest: &DigestRow) -> Result<(Rendered, ListHeaders), RenderError> {
        let content = DigestContent::new(digest);
        // A preview renders in full: it is one email, and it must show template errors.
        let _ = content.prerendered.set(None);
        self.digest(&content, Some(SAMPLE_NAME), SAMPLE_TOKEN)
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
        for (name, token) in [
            (Some("Zoë <b>&amp;</b>"), "tok-1"),
            (None, "tok-2"),
            (Some(""), "t"),
        ] {
            let (fast, _) = c.digest(&content, name, token).expect("fast");
            let url = c.config.link("/unsubscribe", token);
            let full = c
                .render_digest(&content, name.filter(|n| !n.is_empty()), &url)
                .expect("full");
            assert_eq!(fast, full, "{name:?}");
        }
        assert!(
            matches!(content.prerendered.get(), Some(Some(_))),
            "the shipped templates prerender"
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
        assert!(r.text.starts_with("Hello ADA\n"), "{}", r.text);
        assert!(
            matches!(content.prerendered.get(), Some(None)),
            "substitution was refused"
        );
    }
}
