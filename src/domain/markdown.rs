//! The Markdown editors may write in a digest's introduction and its items' summaries, and
//! what it becomes: the one rule, for the email's HTML part, its text part and the archive.
//!
//! The subset is small on purpose: paragraphs (a blank line between them), *emphasis*,
//! **strong** and links `[text](https://…)` (and `<https://…>`). Everything else CommonMark
//! knows is read as text: a heading is a paragraph, a list item a paragraph with its bullet
//! or number, code is its text, an image its alt text. Raw HTML is shown as the characters
//! typed, never passed through; only `http:`, `https:` and `mailto:` link targets become
//! links (any other link is its text alone).
//!
//! Parsing is pulldown-cmark's (linear in its input, whatever the input); rendering is here.
//! Feeds' summaries are plain text: [`escape`] makes them Markdown that reads as they were.

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};

/// One piece of Markdown, rendered for both parts of an email.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Markdown {
    /// HTML: `<p>` per paragraph, `<em>`, `<strong>`, `<a href>`; everything else escaped.
    pub html: String,
    /// Plain text: paragraphs separated by one blank line, emphasis markers dropped, links
    /// as `text (url)`.
    pub text: String,
    /// The words alone, as [`Markdown::text`] without link targets: what a preview line
    /// shows.
    pub words: String,
}

impl Markdown {
    /// Renders `source`; an empty or blank source renders to nothing.
    pub fn render(source: &str) -> Self {
        let mut r = Renderer::default();
        // No extensions: tables, footnotes, strikethrough and the rest stay text.
        for event in Parser::new_ext(source, Options::empty()) {
            r.event(event);
        }
        r.close_block();
        Self {
            html: r.html,
            text: r.text,
            words: r.words,
        }
    }

    /// The first words, for an inbox's preview line: one line, at most `max` characters,
    /// cut at a space where there is one (with "…" when cut).
    pub fn summary_line(&self, max: usize) -> String {
        let line = self.words.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.chars().count() <= max {
            return line;
        }
        let cut: String = line.chars().take(max).collect();
        let cut = match cut.rfind(' ') {
            Some(at) if at > 0 => &cut[..at],
            _ => cut.as_str(),
        };
        format!("{}…", cut.trim_end())
    }
}

/// Plain text as Markdown that renders back to the same words: what Markdown would read as
/// syntax is escaped with a backslash (CommonMark reads `\` before ASCII punctuation as that
/// character), and only that, so the text stays as it was wherever it says nothing to
/// Markdown (`snake_case`, `AT&T`, `(#7001)`, `<b>` are left alone). Feeds' summaries go
/// through this when they become items.
pub fn escape(plain: &str) -> String {
    let mut out = String::with_capacity(plain.len() + plain.len() / 8);
    for (i, line) in plain.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let body = line.trim_start_matches(' ');
        out.push_str(&line[..line.len() - body.len()]);
        // What only means something at a line's start: a heading's "#", a quote's ">", a
        // list's "-", "+" or "1." / "1)", a heading's underline "=".
        let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (head, rest) = body.split_at(digits);
        out.push_str(head);
        let starts = |c: char| {
            if digits > 0 {
                matches!(c, '.' | ')')
            } else {
                matches!(c, '#' | '>' | '-' | '+' | '=')
            }
        };
        let chars: Vec<char> = rest.chars().collect();
        for (at, &c) in chars.iter().enumerate() {
            let before = at.checked_sub(1).and_then(|b| chars.get(b)).copied();
            let after = chars.get(at + 1).copied();
            let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
            let special = match c {
                '\\' | '*' | '`' | '[' | ']' => true,
                // snake_case is no emphasis; _this_ would be.
                '_' => !(word(before) && word(after)),
                // An entity reference (&copy;, &#169;) would become its character.
                '&' => after.is_some_and(|a| a.is_ascii_alphanumeric() || a == '#'),
                // An autolink or raw HTML: both would show as typed, but an autolink's
                // brackets would not.
                '<' => true,
                _ => at == 0 && starts(c),
            };
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Where the HTML's lines are broken at a space.
const HTML_LINE: usize = 200;

/// Whether a link target may become a link: http(s) and mailto only.
fn allowed(url: &str) -> bool {
    let url = url.trim_start();
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("http" | "https" | "mailto"))
}

fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
}

/// An open link: whether it became `<a>`, its target, and where its text starts in `text`.
struct OpenLink {
    anchor: bool,
    url: String,
    text_from: usize,
}

#[derive(Default)]
struct Renderer {
    html: String,
    text: String,
    words: String,
    /// A paragraph is open (in both outputs).
    in_block: bool,
    /// What the next paragraph starts with: a list item's bullet or number.
    prefix: Option<String>,
    /// The next number of each open list (`None`: a bulleted one).
    lists: Vec<Option<u64>>,
    links: Vec<OpenLink>,
    /// Inside an image: its alt text is shown, nothing else of it.
    images: usize,
}

impl Renderer {
    fn open_block(&mut self) {
        if self.in_block {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
            self.words.push_str("\n\n");
        }
        self.html.push_str("<p>");
        self.in_block = true;
        if let Some(prefix) = self.prefix.take() {
            self.put(&prefix);
        }
    }

    fn close_block(&mut self) {
        // Links and emphasis are closed by their own events before their block ends.
        if self.in_block {
            // A block of code or raw HTML ends with its line end: the paragraph's end.
            let kept = self.text.trim_end().len();
            self.text.truncate(kept);
            let kept = self.html.trim_end().len();
            self.html.truncate(kept);
            self.html.push_str("</p>\n");
            self.in_block = false;
        }
    }

    /// Characters as typed, into both outputs. In the HTML a space ends a line once the
    /// line is long (the same whitespace to a browser), so no line nears SMTP's limit.
    fn put(&mut self, s: &str) {
        self.open_block();
        for word in s.split_inclusive(' ') {
            let line = self.html.len() - self.html.rfind('\n').map_or(0, |at| at + 1);
            match word.strip_suffix(' ') {
                Some(w) if line + w.len() > HTML_LINE => {
                    escape_html(w, &mut self.html);
                    self.html.push('\n');
                }
                _ => escape_html(word, &mut self.html),
            }
        }
        self.text.push_str(s);
        self.words.push_str(s);
    }

    fn html_tag(&mut self, tag: &str) {
        if self.images == 0 {
            self.open_block();
            self.html.push_str(tag);
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(s)
            | Event::Code(s)
            | Event::Html(s)
            | Event::InlineHtml(s)
            | Event::InlineMath(s)
            | Event::DisplayMath(s)
            | Event::FootnoteReference(s) => self.put(&s),
            Event::SoftBreak => self.put("\n"),
            Event::HardBreak => {
                self.html_tag("<br>");
                self.put("\n");
            }
            Event::Rule => self.close_block(),
            Event::TaskListMarker(done) => self.put(if done { "[x] " } else { "[ ] " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph
            | Tag::Heading { .. }
            | Tag::CodeBlock(_)
            | Tag::HtmlBlock
            | Tag::BlockQuote(_) => self.close_block(),
            Tag::List(first) => {
                self.close_block();
                self.lists.push(first);
            }
            Tag::Item => {
                self.close_block();
                let prefix = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let p = format!("{n}. ");
                        *n = n.saturating_add(1);
                        p
                    }
                    _ => "• ".to_owned(),
                };
                self.prefix = Some(prefix);
            }
            Tag::Emphasis => self.html_tag("<em>"),
            Tag::Strong => self.html_tag("<strong>"),
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => {
                let url = match link_type {
                    LinkType::Email => format!("mailto:{dest_url}"),
                    _ => dest_url.to_string(),
                };
                let anchor = self.images == 0 && allowed(&url);
                if anchor {
                    self.open_block();
                    self.html.push_str("<a href=\"");
                    escape_html(url.trim(), &mut self.html);
                    self.html.push_str("\">");
                }
                let text_from = self.text.len();
                self.links.push(OpenLink {
                    anchor,
                    url,
                    text_from,
                });
            }
            Tag::Image { .. } => self.images += 1,
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::CodeBlock
            | TagEnd::HtmlBlock
            | TagEnd::BlockQuote(_)
            | TagEnd::Item => self.close_block(),
            TagEnd::List(_) => {
                self.close_block();
                self.lists.pop();
            }
            TagEnd::Emphasis => self.html_tag("</em>"),
            TagEnd::Strong => self.html_tag("</strong>"),
            TagEnd::Link => {
                let Some(link) = self.links.pop() else { return };
                if !link.anchor {
                    return;
                }
                self.html.push_str("</a>");
                let url = link.url.trim();
                let shown = self.text.get(link.text_from..).unwrap_or_default();
                let same = shown == url || url.strip_prefix("mailto:") == Some(shown);
                if !same {
                    self.text.push_str(" (");
                    self.text.push_str(url);
                    self.text.push(')');
                }
            }
            TagEnd::Image => self.images = self.images.saturating_sub(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(s: &str) -> Markdown {
        Markdown::render(s)
    }

    #[test]
    fn paragraphs_emphasis_and_links() {
        let m = md(
            "Hello *you*,\n\nthis is **big** and [a link](https://example.com/?a=1&b=2).\n\n\n\nBye.",
        );
        assert_eq!(
            m.html,
            "<p>Hello <em>you</em>,</p>\n<p>this is <strong>big</strong> and \
             <a href=\"https://example.com/?a=1&amp;b=2\">a link</a>.</p>\n<p>Bye.</p>\n"
        );
        assert_eq!(
            m.text,
            "Hello you,\n\nthis is big and a link (https://example.com/?a=1&b=2).\n\nBye."
        );
        assert_eq!(md("").html, "");
        assert_eq!(md("  \n\n ").text, "");
    }

    #[test]
    fn a_line_break_inside_a_paragraph_stays_one() {
        let m = md("one\ntwo");
        assert_eq!(m.html, "<p>one\ntwo</p>\n");
        assert_eq!(m.text, "one\ntwo");
    }

    #[test]
    fn raw_html_is_text() {
        for src in [
            "<script>alert(1)</script>",
            "Hi <script>alert(1)</script> there",
            "<img src=x onerror=alert(1)>",
            "a <b onclick=\"x\">b</b>",
            "<!-- c --><iframe src=\"https://evil.test\"></iframe>",
        ] {
            let m = md(src);
            assert!(
                !m.html.contains('<') || no_tags_but_ours(&m.html),
                "{src}: {}",
                m.html
            );
            assert!(m.html.contains("&lt;"), "{src}: {}", m.html);
            assert!(
                m.text.contains('<'),
                "the text part shows what was typed: {}",
                m.text
            );
        }
        assert_eq!(
            md("<script>alert(1)</script>").html,
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
        );
    }

    /// Every `<` in the HTML opens one of the tags the subset makes.
    fn no_tags_but_ours(html: &str) -> bool {
        html.match_indices('<').all(|(at, _)| {
            let rest = &html[at..];
            [
                "<p>",
                "</p>",
                "<em>",
                "</em>",
                "<strong>",
                "</strong>",
                "<a href=\"",
                "</a>",
                "<br>",
            ]
            .iter()
            .any(|t| rest.starts_with(t))
        })
    }

    #[test]
    fn only_http_https_and_mailto_links_survive() {
        for src in [
            "[x](javascript:alert(1))",
            "[x](JavaScript:alert(1))",
            "[x]( javascript:alert(1))",
            "[x](data:text/html,<script>alert(1)</script>)",
            "[x](vbscript:msgbox)",
            "[x](/relative)",
            "[x](file:///etc/passwd)",
            "<javascript:alert(1)>",
        ] {
            let m = md(src);
            assert!(!m.html.contains("href"), "{src}: {}", m.html);
            assert!(no_tags_but_ours(&m.html), "{src}: {}", m.html);
        }
        assert_eq!(
            md("[write](mailto:ed@example.com)").html,
            "<p><a href=\"mailto:ed@example.com\">write</a></p>\n"
        );
        assert_eq!(
            md("<ed@example.com>").html,
            "<p><a href=\"mailto:ed@example.com\">ed@example.com</a></p>\n"
        );
        let auto = md("see <https://example.com/a>");
        assert_eq!(
            auto.html,
            "<p>see <a href=\"https://example.com/a\">https://example.com/a</a></p>\n"
        );
        assert_eq!(auto.text, "see https://example.com/a", "the URL once");
        let quote = md("[x](https://e.test/\"onmouseover=\"alert(1))");
        assert!(!quote.html.contains("\"onmouseover"), "{}", quote.html);
    }

    #[test]
    fn images_headings_lists_and_code_are_text() {
        let m = md(
            "# Title\n\n![a cat](https://e.test/cat.png)\n\n- one\n- two\n\n3. three\n\n`code` and\n\n    indented",
        );
        assert!(
            !m.html.contains("<img") && !m.html.contains("<h1"),
            "{}",
            m.html
        );
        assert!(
            !m.html.contains("<li") && !m.html.contains("<code"),
            "{}",
            m.html
        );
        assert!(no_tags_but_ours(&m.html), "{}", m.html);
        assert_eq!(
            m.text,
            "Title\n\na cat\n\n• one\n\n• two\n\n3. three\n\ncode and\n\nindented"
        );
    }

    #[test]
    fn nested_emphasis_nests() {
        let m = md("***both*** and *a **b** c* and [*em link*](https://e.test)");
        assert_eq!(
            m.html,
            "<p><em><strong>both</strong></em> and <em>a <strong>b</strong> c</em> and \
             <a href=\"https://e.test\"><em>em link</em></a></p>\n"
        );
        assert_eq!(m.text, "both and a b c and em link (https://e.test)");
    }

    #[test]
    fn hostile_sizes_take_bounded_time() {
        let started = std::time::Instant::now();
        for src in [
            "*".repeat(10_000),
            format!("a{}", "*".repeat(10_000)),
            "*a".repeat(5_000),
            "**a".repeat(3_000),
            "[".repeat(10_000),
            "[a](".repeat(2_500),
            "<".repeat(10_000),
            format!("{}x{}", "_".repeat(5_000), "_".repeat(5_000)),
            "> ".repeat(5_000),
            "- ".repeat(5_000),
        ] {
            let m = md(&src);
            assert!(
                no_tags_but_ours(&m.html),
                "{}",
                &m.html[..m.html.len().min(200)]
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn escaped_plain_text_renders_as_itself() {
        for plain in [
            "2 * 3 * 4 = 24, and a*b*c",
            "[1] see [this](not a link) <b>bold</b> & co",
            "# not a heading",
            "- not a list",
            "1. not a list either",
            "> not a quote",
            "snake_case_name and __dunder__ _em_ `tick` \\ back ***",
            "***",
            "<https://e.test> <b>",
            "line one\n- two\n===",
            "!![x](https://e.test)",
            "AT&T &amp; &copy;",
            "12 monkeys",
            "TcpStream::set_quickack (#7001), Points: 312 & counting",
        ] {
            let m = md(&escape(plain));
            assert_eq!(m.text, plain, "{}", escape(plain));
            assert!(no_tags_but_ours(&m.html), "{}", m.html);
            assert!(
                !m.html.contains("<a") && !m.html.contains("<em"),
                "{}",
                m.html
            );
        }
        assert_eq!(
            escape("TcpStream::set_quickack (#7001), 312 & counting <b>"),
            "TcpStream::set_quickack (#7001), 312 & counting \\<b>",
            "plain text stays plain where Markdown reads nothing in it"
        );
    }

    #[test]
    fn the_summary_line_is_cut_at_a_word() {
        let m = md("Hello **there**,\n\nthis week: [many](https://e.test) things happened.");
        assert_eq!(
            m.summary_line(100),
            "Hello there, this week: many things happened."
        );
        assert_eq!(m.summary_line(20), "Hello there, this…");
        assert_eq!(
            md(&"x".repeat(30)).summary_line(10),
            format!("{}…", "x".repeat(10))
        );
    }
}
