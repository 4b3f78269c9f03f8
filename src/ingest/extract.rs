//! Main-content extraction from HTML, Markdown and plain text. Pure: no I/O.
//!
//! The result keeps the page title, the heading path above each passage, the page's links,
//! and the robots/canonical/refresh signals the crawler acts on.

use scraper::{ElementRef, Html, Node, Selector};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub title: String,
    pub sections: Vec<Section>,
    /// Raw `href` values of the page's links, in document order.
    pub links: Vec<String>,
    pub canonical: Option<String>,
    /// The target of a `<meta http-equiv=refresh>`: the page is a redirect stub.
    pub refresh_to: Option<String>,
    pub noindex: bool,
    pub nofollow: bool,
}

/// A run of text under one heading path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub heading_path: Vec<String>,
    pub text: String,
    /// Where in the document the text is, as a URL fragment (`page=3` for a PDF's third
    /// page): its chunks cite the page's URL with it. None for pages read whole.
    pub anchor: Option<String>,
}

impl Extracted {
    /// All text, for hashing and duplicate detection.
    pub fn full_text(&self) -> String {
        let mut out = self.title.clone();
        for section in &self.sections {
            out.push('\n');
            out.push_str(&section.heading_path.join(" > "));
            if let Some(anchor) = &section.anchor {
                out.push_str(" #");
                out.push_str(anchor);
            }
            out.push('\n');
            out.push_str(&section.text);
        }
        out
    }

    /// The body text alone: equal bodies under different URLs or titles are duplicates.
    pub fn body_text(&self) -> String {
        let bodies: Vec<&str> = self.sections.iter().map(|s| s.text.as_str()).collect();
        bodies.join("\n")
    }

    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|s| s.text.trim().is_empty())
    }
}

/// Elements whose content is never part of the main text.
const SKIPPED_TAGS: &[&str] = &[
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "button", "svg",
    "template", "iframe", "select", "dialog", "head",
];

/// Class or id tokens that mark navigation chrome ("on this page" boxes, sidebars).
const SKIPPED_MARKERS: &[&str] = &[
    "sidebar",
    "toc",
    "on-this-page",
    "table-of-contents",
    "breadcrumb",
    "breadcrumbs",
    "skip-link",
    "nav-chapters",
    "mobile-nav-chapters",
];

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "blockquote",
    "figure",
    "figcaption",
    "br",
    "hr",
    "details",
    "summary",
];

/// `text` without NUL characters: no page means them, and PostgreSQL's `jsonb` cannot hold
/// them, so both stores keep the same text.
fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "").into()
    } else {
        text.into()
    }
}

pub fn extract_html(html: &str) -> Extracted {
    let html = without_nul(html);
    let doc = Html::parse_document(&html);
    let mut out = Extracted::default();

    let select = |css: &str| Selector::parse(css).expect("static selector");
    if let Some(title) = doc.select(&select("title")).next() {
        out.title = collapse_whitespace(&title.text().collect::<String>());
    }
    for meta in doc.select(&select("meta")) {
        let attr = |name: &str| meta.value().attr(name).unwrap_or("").to_ascii_lowercase();
        if attr("name") == "robots" {
            let content = attr("content");
            out.noindex |= content.contains("noindex") || content.contains("none");
            out.nofollow |= content.contains("nofollow") || content.contains("none");
        }
        if attr("http-equiv") == "refresh" {
            let content = meta.value().attr("content").unwrap_or("");
            out.refresh_to = refresh_target(content);
        }
    }
    if let Some(link) = doc
        .select(&select("link[rel~=canonical]"))
        .next()
        .and_then(|l| l.value().attr("href"))
    {
        out.canonical = Some(link.trim().to_string());
    }
    for a in doc.select(&select("a[href]")) {
        let rel = a.value().attr("rel").unwrap_or("");
        if !rel
            .split_whitespace()
            .any(|r| r.eq_ignore_ascii_case("nofollow"))
        {
            out.links
                .push(a.value().attr("href").unwrap_or("").trim().to_string());
        }
    }

    let root = ["main", "article", "[role=main]", "#content", "body"]
        .iter()
        .find_map(|css| doc.select(&select(css)).next())
        .unwrap_or_else(|| doc.root_element());
    let mut walker = Walker::default();
    walker.walk(root, 0);
    walker.flush_section();
    out.sections = walker.sections;
    if out.title.is_empty() {
        out.title = out
            .sections
            .iter()
            .find_map(|s| s.heading_path.first().cloned())
            .unwrap_or_default();
    }
    out
}

/// Markdown: `#` headings start sections; everything else is text.
pub fn extract_markdown(markdown: &str) -> Extracted {
    let markdown = without_nul(markdown);
    let mut out = Extracted::default();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut text = String::new();
    let mut in_fence = false;
    let flush = |out: &mut Extracted, path: &[(usize, String)], text: &mut String| {
        let body = text.trim();
        if !body.is_empty() {
            out.sections.push(Section {
                heading_path: path.iter().map(|(_, h)| h.clone()).collect(),
                text: body.to_string(),
                anchor: None,
            });
        }
        text.clear();
    };
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        let is_heading = !in_fence && (1..=6).contains(&level) && line[level..].starts_with(' ');
        if is_heading {
            flush(&mut out, &path, &mut text);
            let heading = line[level..].trim().to_string();
            if out.title.is_empty() && level == 1 {
                out.title = heading.clone();
            }
            path.retain(|(l, _)| *l < level);
            path.push((level, heading));
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    flush(&mut out, &path, &mut text);
    out
}

pub fn extract_text(text: &str) -> Extracted {
    Extracted {
        sections: vec![Section {
            heading_path: Vec::new(),
            text: without_nul(text).trim().to_string(),
            anchor: None,
        }],
        ..Extracted::default()
    }
}

/// The target of a refresh that fires within 5 seconds; slower refreshes (a status page
/// reloading itself) are not redirects.
fn refresh_target(content: &str) -> Option<String> {
    let delay: f32 = content
        .split([';', ','])
        .next()
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or(0.0);
    if delay > 5.0 {
        return None;
    }
    let lower = content.to_ascii_lowercase();
    let at = lower.find("url")?;
    let rest = content[at + 3..].trim_start();
    let rest = rest.strip_prefix('=')?.trim();
    let target = rest.trim_matches(|c| c == '\'' || c == '"').trim();
    (!target.is_empty()).then(|| target.to_string())
}

pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Default)]
struct Walker {
    sections: Vec<Section>,
    headings: Vec<(usize, String)>,
    paragraphs: Vec<String>,
    line: String,
}

/// Deeper nesting than this is flattened to text: recursion must not overflow the stack on
/// hostile pages (`"<span>".repeat(100_000)`).
const MAX_DEPTH: usize = 200;

impl Walker {
    fn walk(&mut self, element: ElementRef<'_>, depth: usize) {
        if depth > MAX_DEPTH {
            self.push_inline(&element.text().collect::<String>());
            return;
        }
        for child in element.children() {
            match child.value() {
                Node::Text(text) => self.push_inline(text),
                Node::Element(el) => {
                    let Some(child_el) = ElementRef::wrap(child) else {
                        continue;
                    };
                    let tag = el.name();
                    if is_skipped(child_el) {
                        continue;
                    }
                    if let Some(level) = heading_level(tag) {
                        self.flush_section();
                        let text = collapse_whitespace(&child_el.text().collect::<String>());
                        self.headings.retain(|(l, _)| *l < level);
                        if !text.is_empty() {
                            self.headings.push((level, text));
                        }
                    } else if tag == "pre" {
                        self.end_line();
                        let code: String = child_el.text().collect();
                        let code = code.trim_end();
                        if !code.trim().is_empty() {
                            self.paragraphs.push(code.to_string());
                        }
                    } else if tag == "li" {
                        self.end_line();
                        self.line.push_str("- ");
                        self.walk(child_el, depth + 1);
                        self.end_line();
                    } else if tag == "td" || tag == "th" {
                        if !self.line.is_empty() {
                            self.line.push_str(" | ");
                        }
                        self.walk(child_el, depth + 1);
                    } else if BLOCK_TAGS.contains(&tag) {
                        self.end_line();
                        self.walk(child_el, depth + 1);
                        self.end_line();
                    } else {
                        self.walk(child_el, depth + 1);
                    }
                }
                _ => {}
            }
        }
    }

    fn push_inline(&mut self, text: &str) {
        let starts_with_space = text.starts_with(char::is_whitespace);
        let ends_with_space = text.ends_with(char::is_whitespace);
        let words = collapse_whitespace(text);
        if words.is_empty() {
            if (starts_with_space || ends_with_space) && !self.line.ends_with(' ') {
                self.line.push(' ');
            }
            return;
        }
        if starts_with_space && !self.line.is_empty() && !self.line.ends_with(' ') {
            self.line.push(' ');
        }
        self.line.push_str(&words);
        if ends_with_space {
            self.line.push(' ');
        }
    }

    fn end_line(&mut self) {
        let line = self.line.trim();
        if !line.is_empty() && line != "-" {
            self.paragraphs.push(line.to_string());
        }
        self.line.clear();
    }

    fn flush_section(&mut self) {
        self.end_line();
        if self.paragraphs.is_empty() {
            return;
        }
        let text = self.paragraphs.join("\n");
        self.paragraphs.clear();
        self.sections.push(Section {
            heading_path: self.headings.iter().map(|(_, h)| h.clone()).collect(),
            text,
            anchor: None,
        });
    }
}

fn heading_level(tag: &str) -> Option<usize> {
    match tag {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn is_skipped(el: ElementRef<'_>) -> bool {
    let value = el.value();
    if SKIPPED_TAGS.contains(&value.name()) {
        return true;
    }
    if value.attr("hidden").is_some() || value.attr("aria-hidden") == Some("true") {
        return true;
    }
    let marked = |token: &str| SKIPPED_MARKERS.contains(&token.to_ascii_lowercase().as_str());
    value.classes().any(marked) || value.id().is_some_and(marked)
}

#[cfg(test)]
mod tests {

    #[test]
    fn nul_characters_never_reach_a_page() {
        let html = extract_html("<title>A\0B</title><main><h1>Head\0ing</h1><p>te\0xt</p></main>");
        let markdown = extract_markdown("# Ti\0tle\n\nbo\0dy");
        let text = extract_text("pl\0ain");
        for extracted in [html, markdown, text] {
            assert!(!format!("{extracted:?}").contains('\0'), "{extracted:?}");
            assert!(!extracted.full_text().contains('\0'));
        }
    }
    use super::*;

    #[test]
    fn main_content_keeps_headings_and_drops_chrome() {
        let html = r#"<html><head><title>Shipping | Shop</title><style>p{}</style></head>
        <body><header>Logo</header><nav><a href="/a">Menu item</a></nav>
        <main><h1>Shipping</h1><p>Intro  text
        here.</p><h2>Express</h2><p>Fast <b>and</b> costly.</p>
        <aside class="on-this-page">Contents</aside><ul><li>One</li><li>Two</li></ul>
        <script>var x = 1;</script></main><footer>(c) Shop</footer></body></html>"#;
        let page = extract_html(html);
        assert_eq!(page.title, "Shipping | Shop");
        assert_eq!(page.links, vec!["/a"]);
        assert_eq!(
            page.sections,
            vec![
                Section {
                    heading_path: vec!["Shipping".into()],
                    text: "Intro text here.".into(),
                    anchor: None,
                },
                Section {
                    heading_path: vec!["Shipping".into(), "Express".into()],
                    text: "Fast and costly.\n- One\n- Two".into(),
                    anchor: None,
                },
            ]
        );
    }

    #[test]
    fn robots_meta_refresh_and_canonical_are_read() {
        let html = r#"<html><head><meta name="robots" content="noindex, follow">
        <meta http-equiv="Refresh" content="0; URL='new.html'">
        <link rel="canonical" href="https://x.example/c"></head><body>x</body></html>"#;
        let page = extract_html(html);
        assert!(page.noindex && !page.nofollow);
        assert_eq!(page.refresh_to.as_deref(), Some("new.html"));
        assert_eq!(page.canonical.as_deref(), Some("https://x.example/c"));
    }

    #[test]
    fn code_blocks_keep_their_layout_and_tables_their_cells() {
        let html = "<main><pre><code>fn main() {\n    x();\n}</code></pre>\
            <table><tr><th>Model</th><th>Watts</th></tr><tr><td>Mini</td><td>1000</td></tr></table></main>";
        let page = extract_html(html);
        assert_eq!(
            page.sections[0].text,
            "fn main() {\n    x();\n}\nModel | Watts\nMini | 1000"
        );
    }

    #[test]
    fn deep_nesting_and_slow_refreshes_are_not_traps() {
        let html = format!("<main>{}deep text</main>", "<span>".repeat(100_000));
        assert!(extract_html(&html).full_text().contains("deep text"));
        let slow = r#"<meta http-equiv="refresh" content="300; url=/status"><main>live</main>"#;
        assert_eq!(extract_html(slow).refresh_to, None);
    }

    #[test]
    fn markdown_headings_become_paths() {
        let page =
            extract_markdown("# Guide\nIntro\n## Install\nRun it.\n```\n# not a heading\n```\n");
        assert_eq!(page.title, "Guide");
        assert_eq!(page.sections[1].heading_path, vec!["Guide", "Install"]);
        assert!(page.sections[1].text.contains("# not a heading"));
    }
}
