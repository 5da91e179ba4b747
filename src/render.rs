//! Templates: every email and page comes from `templates/`, loaded and compiled once at start
//! so a broken template stops the process with its name and line instead of failing a send.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// An email ready for MIME: subject line, HTML part, plain-text part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read templates folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {detail}")]
    Template { name: String, detail: String },
    #[error("template {0} renders a subject with a line break or control character")]
    BadSubject(String),
    #[error("required template {0} is missing from the templates folder")]
    Missing(String),
}

impl RenderError {
    fn from_jinja(name: &str, e: &minijinja::Error) -> Self {
        let at = match (e.name(), e.line()) {
            (Some(n), Some(l)) => format!("{n} line {l}: "),
            (Some(n), None) => format!("{n}: "),
            _ => String::new(),
        };
        let detail = match e.detail() {
            Some(d) => format!("{at}{} ({d})", e.kind()),
            None => format!("{at}{}", e.kind()),
        };
        Self::Template {
            name: name.to_owned(),
            detail,
        }
    }
}

/// Templates every installation must have; checked at start.
const REQUIRED: &[&str] = &[
    "layout.html.j2",
    "email.html.j2",
    "index.html.j2",
    "subscribed.html.j2",
    "confirm.html.j2",
    "unsubscribe.html.j2",
    "confirmation.subject.j2",
    "confirmation.html.j2",
    "confirmation.txt.j2",
    "digest.subject.j2",
    "digest.html.j2",
    "digest.txt.j2",
    "digest_body.html.j2",
    "archive.html.j2",
    "archive_digest.html.j2",
    "archive_feed.xml.j2",
    "welcome.subject.j2",
    "welcome.html.j2",
    "welcome.txt.j2",
    "manage.html.j2",
    "error.html.j2",
    "admin.html.j2",
    "admin_login.html.j2",
    "studio_items.html.j2",
    "studio_item.html.j2",
    "studio_digests.html.j2",
    "studio_digest.html.j2",
    "studio_schedule.html.j2",
];

/// `{{ text | wrap }}` (or `wrap(60)`): breaks long text at spaces into lines of at most
/// `width` characters (a longer word, such as a URL, keeps a line of its own). Plain-text email
/// reads better wrapped, and in HTML the line breaks are mere whitespace; either way no line
/// reaches SMTP's 998-octet limit, so the part can go without quoted-printable encoding.
fn wrap(text: &str, width: Option<usize>) -> String {
    let width = width.unwrap_or(76).max(10);
    let mut out = String::with_capacity(text.len() + text.len() / width + 1);
    for (i, paragraph) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut line_len = 0;
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            let len = word.chars().count();
            if line_len > 0 && line_len + 1 + len > width {
                out.push('\n');
                line_len = 0;
            } else if line_len > 0 {
                out.push(' ');
                line_len += 1;
            }
            out.push_str(word);
            line_len += len;
        }
    }
    out
}

pub struct Renderer {
    env: Environment<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Renderer {
    /// Reads every `*.j2` file of `dir`; HTML templates (`*.html.j2`) are autoescaped, and
    /// an undefined variable is an error, never an empty string in someone's inbox.
    pub fn load(dir: &Path) -> Result<Self, RenderError> {
        let folder_err = |source| RenderError::Folder {
            path: dir.display().to_string(),
            source,
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_keep_trailing_newline(true);
        env.add_filter("wrap", wrap);
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(folder_err)?
            .collect::<Result<_, _>>()
            .map_err(folder_err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".j2") {
                continue;
            }
            let source = std::fs::read_to_string(entry.path()).map_err(folder_err)?;
            env.add_template_owned(name.clone(), source)
                .map_err(|e| RenderError::from_jinja(&name, &e))?;
        }
        for name in REQUIRED {
            env.get_template(name)
                .map_err(|_| RenderError::Missing((*name).to_owned()))?;
        }
        Ok(Self { env })
    }

    /// Renders one template by file name.
    pub fn render<S: Serialize>(&self, name: &str, ctx: S) -> Result<String, RenderError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|_| RenderError::Missing(name.to_owned()))?;
        t.render(ctx).map_err(|e| RenderError::from_jinja(name, &e))
    }

    /// Renders `{stem}.subject.j2`, `{stem}.html.j2` and `{stem}.txt.j2` with one context.
    pub fn email<S: Serialize>(&self, stem: &str, ctx: S) -> Result<Rendered, RenderError> {
        let ctx = minijinja::Value::from_serialize(&ctx);
        let subject_name = format!("{stem}.subject.j2");
        let subject = self.render(&subject_name, &ctx)?.trim().to_owned();
        if subject.is_empty() || subject.chars().any(char::is_control) {
            return Err(RenderError::BadSubject(subject_name));
        }
        Ok(Rendered {
            subject,
            html: self.render(&format!("{stem}.html.j2"), &ctx)?,
            text: self.render(&format!("{stem}.txt.j2"), &ctx)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Renderer {
        Renderer::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/templates")))
            .expect("shipped templates load")
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let r = shipped()
            .email(
                "confirmation",
                minijinja::context! {
                    list_name => "News",
                    name => "<script>alert(1)</script>",
                    confirm_url => "http://x.test/confirm?token=a&b",
                    valid_for => "2 days",
                },
            )
            .expect("renders");
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("token=a&amp;b"));
        assert!(r.text.contains("http://x.test/confirm?token=a&b"));
        assert!(!r.subject.is_empty());
    }

    #[test]
    fn wrap_breaks_at_spaces_and_keeps_long_words_whole() {
        let text = format!(
            "{} {} end",
            "word ".repeat(40).trim(),
            "https://example.com/".repeat(5)
        );
        let wrapped = wrap(&text, None);
        assert!(
            wrapped
                .lines()
                .all(|l| l.chars().count() <= 76 || !l.contains(' ')),
            "{wrapped}"
        );
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
        assert_eq!(wrap("a\n\nb", Some(20)), "a\n\nb", "paragraphs stay");
    }

    #[test]
    fn undefined_variables_are_errors() {
        let err = shipped()
            .email("confirmation", minijinja::context! { list_name => "News" })
            .expect_err("confirm_url is missing");
        assert!(err.to_string().contains("confirmation"), "{err}");
    }

    #[test]
    fn a_broken_template_fails_loading_with_its_name_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.html.j2"), "line one\n{% if %}\n").expect("write");
        let err = Renderer::load(dir.path()).expect_err("syntax error");
        let msg = err.to_string();
        assert!(
            msg.contains("bad.html.j2") && msg.contains("line 2"),
            "{msg}"
        );
    }
}
