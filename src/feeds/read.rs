//! Reading a feed (RSS 0.9x/1.0/2.0, Atom, JSON Feed, through feed-rs) into candidate items:
//! pure, no I/O.
//!
//! - An entry's key is its guid/id, or else its normalised link: the key of (feed, entry)
//!   that is seen once.
//! - Entries dated in the future are left out (not even seen: they count once their time
//!   comes).
//! - On a feed's first poll (`since` is set), only entries dated within the window become
//!   items; older and undated ones are only seen, so they never arrive later.
//! - The summary is plain text: HTML removed (html2text), whitespace collapsed, capped at
//!   [`SUMMARY_MAX`] characters, then escaped as Markdown (`domain::markdown::escape`: a
//!   feed's `*` or `[` is shown as it is, never read as emphasis or a link); the source is
//!   the feed's title.

use chrono::{DateTime, Utc};
use feed_rs::model::{Entry, Feed, Text};

use crate::domain::NewItem;
use crate::domain::markdown;

pub const SUMMARY_MAX: usize = 500;
const TITLE_MAX: usize = 200;
const SOURCE_MAX: usize = 100;

/// One entry of a feed: its key and, when it should become an item, the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: String,
    pub item: Option<NewItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The feed's own title, as one line.
    pub title: Option<String>,
    pub entries: Vec<Candidate>,
}

/// Parses a feed of any format feed-rs knows; the error says why it is not one.
pub fn parse(bytes: &[u8], url: &str) -> Result<Feed, String> {
    feed_rs::parser::Builder::new()
        .base_uri(Some(url))
        .id_generator(|links, _title, _uri| {
            links
                .first()
                .and_then(|l| normalise_link(&l.href))
                .map(|l| format!("link:{l}"))
                .unwrap_or_default()
        })
        .build()
        .parse(bytes)
        .map_err(|e| format!("not a feed: {e}"))
}

/// Candidate items of `feed` at `now`; `since`: the first poll's window.
pub fn read(feed: &Feed, now: DateTime<Utc>, since: Option<DateTime<Utc>>) -> Read {
    let title = feed
        .title
        .as_ref()
        .map(|t| one_line(&plain(t), SOURCE_MAX))
        .filter(|t| !t.is_empty());
    let entries = feed
        .entries
        .iter()
        .filter_map(|e| candidate(e, title.as_deref(), now, since))
        .collect();
    Read { title, entries }
}

fn candidate(
    e: &Entry,
    source: Option<&str>,
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Option<Candidate> {
    let date = e.published.or(e.updated);
    if date.is_some_and(|d| d > now) {
        return None;
    }
    let link = e
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or(e.links.first())
        .and_then(|l| normalise_link(&l.href));
    let key = match e.id.trim() {
        "" => format!("link:{}", link.as_deref()?),
        id if id.starts_with("link:") => id.to_owned(),
        id => format!("guid:{id}"),
    };
    let recent = match since {
        None => true,
        Some(since) => date.is_some_and(|d| d >= since),
    };
    let item = recent.then(|| item(e, link.as_deref()?, source)).flatten();
    Some(Candidate { key, item })
}

fn item(e: &Entry, link: &str, source: Option<&str>) -> Option<NewItem> {
    let title = e
        .title
        .as_ref()
        .map(|t| one_line(&plain(t), TITLE_MAX))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| one_line(link, TITLE_MAX));
    let summary = e
        .summary
        .as_ref()
        .map(plain)
        .or_else(|| {
            e.content
                .as_ref()
                .and_then(|c| c.body.as_deref())
                .map(html_to_text)
        })
        .map(|s| capped(&collapse(&s), SUMMARY_MAX))
        .unwrap_or_default();
    // Summaries are Markdown (editors write them so); a feed's is plain text, so it is
    // escaped to read as it was.
    NewItem::parse(&title, link, &markdown::escape(&summary), source).ok()
}

/// A text construct as plain text: HTML (or anything that looks like it) through html2text.
fn plain(t: &Text) -> String {
    if t.content_type.subty().as_str() == "html"
        || t.content.contains('<')
        || t.content.contains('&')
    {
        html_to_text(&t.content)
    } else {
        t.content.clone()
    }
}

/// HTML as text: no tags, entities decoded, no link footnotes, no wrapping.
pub fn html_to_text(html: &str) -> String {
    html2text::config::with_decorator(html2text::render::TrivialDecorator::new())
        .string_from_read(html.as_bytes(), usize::MAX / 4)
        .unwrap_or_default()
}

/// Runs of whitespace become one space, blank-line paragraphs stay one newline apart.
fn collapse(s: &str) -> String {
    s.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    capped(&s, max)
}

/// At most `max` characters, cut at a word where one is near, with an ellipsis.
fn capped(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > cut.len() * 3 / 4 => &cut[..i],
        _ => &cut[..],
    };
    format!("{}…", cut.trim_end())
}

/// A link as it is compared: an http(s) URL (the url crate lowercases the scheme and host and
/// drops a default port), without its fragment or `utm_*` tracking parameters.
pub fn normalise_link(href: &str) -> Option<String> {
    let mut url = url::Url::parse(href.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    url.set_fragment(None);
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("utm_"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else if url.query_pairs().count() != kept.len() {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn sample(bytes: &[u8], since: Option<&str>) -> Read {
        let feed = parse(bytes, "https://feeds.example/").expect("a feed");
        read(&feed, at("2026-12-02T06:00:00Z"), since.map(at))
    }

    #[test]
    fn each_sample_reads_into_keyed_candidates() {
        let blog = sample(
            include_bytes!("../../tests/samples/feeds/blog-rss2.xml"),
            Some("2026-12-01T06:00:00Z"),
        );
        assert_eq!(blog.title.as_deref(), Some("Inside Rust Blog"));
        let keys: Vec<&str> = blog.entries.iter().map(|c| c.key.as_str()).collect();
        // The future-dated entry is not even seen; the old one is seen, without an item.
        assert_eq!(
            keys,
            [
                "guid:https://blog.rust-lang.example/inside-rust/2026/12/01/compiler-perf.html",
                "guid:twir-576",
                "guid:https://blog.rust-lang.example/inside-rust/2026/11/20/edition-2027.html",
            ]
        );
        assert_eq!(
            blog.entries
                .iter()
                .map(|c| c.item.is_some())
                .collect::<Vec<_>>(),
            [true, true, false]
        );
        // Without a window (a later poll), the old entry is an item too.
        assert!(
            sample(
                include_bytes!("../../tests/samples/feeds/blog-rss2.xml"),
                None
            )
            .entries
            .iter()
            .all(|c| c.item.is_some())
        );
        for (bytes, title, n) in [
            (
                &include_bytes!("../../tests/samples/feeds/github-releases.atom")[..],
                "Release notes from tokio",
                2,
            ),
            (
                &include_bytes!("../../tests/samples/feeds/json-feed.json")[..],
                "Daring Example",
                2,
            ),
            (
                &include_bytes!("../../tests/samples/feeds/rdf-rss1.xml")[..],
                "LWN.example headlines",
                2,
            ),
            (
                &include_bytes!("../../tests/samples/feeds/cdata-html.xml")[..],
                "Hacker Example: Front Page",
                2,
            ),
        ] {
            let r = sample(bytes, None);
            assert_eq!(r.title.as_deref(), Some(title));
            assert_eq!(r.entries.len(), n, "{title}");
            for c in &r.entries {
                let item = c.item.as_ref().expect("an item");
                assert_eq!(item.source.as_deref(), Some(title));
                assert!(!item.summary.contains('<'), "{title}: {}", item.summary);
            }
        }
        assert!(
            parse(
                include_bytes!("../../tests/samples/feeds/malformed.xml"),
                "https://feeds.example/"
            )
            .is_err()
        );
    }

    #[test]
    fn links_are_compared_without_fragments_or_tracking() {
        assert_eq!(
            normalise_link("HTTPS://Example.COM:443/a?utm_source=x&id=2#top").as_deref(),
            Some("https://example.com/a?id=2")
        );
        assert_eq!(
            normalise_link("https://example.com/a?utm_medium=rss").as_deref(),
            Some("https://example.com/a")
        );
        assert_eq!(normalise_link("javascript:alert(1)"), None);
    }

    #[test]
    fn summaries_are_plain_capped_text() {
        let t = html_to_text(
            "<p>Hello <b>world</b> &amp; <a href=\"x\">friends</a></p><script>x</script>",
        );
        assert_eq!(collapse(&t), "Hello world & friends");
        let long = "word ".repeat(200);
        let c = capped(&collapse(&long), SUMMARY_MAX);
        assert!(c.chars().count() <= SUMMARY_MAX, "{}", c.chars().count());
        assert!(c.ends_with("word…"), "{c}");
    }

    #[test]
    fn a_feeds_markdown_characters_read_as_they_were() {
        let summary =
            "2 * 3 *is* six; see [the docs](https://evil.example/) or _now_, AT&T # 1 snake_case";
        let feed = format!(
            r#"{{"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [
                {{"id": "1", "url": "https://example.com/a", "title": "A", "content_text": {summary:?},
                  "date_published": "2026-12-01T00:00:00Z"}}]}}"#
        );
        let r = sample(feed.as_bytes(), None);
        let item = r.entries[0].item.as_ref().expect("an item");
        let shown = crate::domain::markdown::Markdown::render(&item.summary);
        assert_eq!(shown.text, summary, "{}", item.summary);
        assert!(
            !shown.html.contains("<a") && !shown.html.contains("<em"),
            "{}",
            shown.html
        );
    }
}
