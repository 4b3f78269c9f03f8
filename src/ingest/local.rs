//! Ingest from files: a local folder's or documents uploaded to the API (`.html`, `.md`,
//! `.txt`, `.docx` and `.pdf`), cited under `--base-url` or the upload's base URL.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use url::Url;

use super::crawl::{CrawlReport, CrawledPage};
use super::{documents, extract};
use crate::domain::UploadedFile;

const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;

/// Reads every supported file under `root`. Each page's URL is `base_url` joined with the
/// file's relative path, or a `file://` URL when no base is given.
pub fn scan(root: &Path, base_url: Option<&Url>, max_pages: usize) -> anyhow::Result<CrawlReport> {
    if !root.is_dir() {
        bail!("{} is not a folder", root.display());
    }
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", root.display()))?;
    let mut files = Vec::new();
    collect_files(&root, &mut files)?;
    // Shallow, short paths first: among duplicate pages the plainest URL is kept.
    files.sort_by_key(|p| (p.components().count(), p.as_os_str().len(), p.clone()));
    let mut urls = Vec::with_capacity(files.len());
    for path in &files {
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let rel_url = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let url = match base_url {
            Some(base) => file_url(
                base,
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned()),
            )?,
            None => Url::from_file_path(path)
                .map_err(|_| anyhow::anyhow!("cannot make a URL of {}", path.display()))?,
        };
        urls.push((rel_url, url));
    }
    let all_urls: std::collections::HashSet<String> =
        urls.iter().map(|(_, u)| u.to_string()).collect();
    let mut report = CrawlReport::default();
    let mut bodies = std::collections::HashSet::new();
    for (path, (rel_url, url)) in files.into_iter().zip(urls) {
        if report.pages.len() >= max_pages {
            break;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > max_bytes(&path) as u64 {
            report
                .skipped
                .push((url.to_string(), "larger than the page size limit".into()));
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        let Some(extracted) = read_file(&path, &bytes, url.as_str(), &mut report) else {
            continue;
        };
        let canonical = extracted
            .canonical
            .as_deref()
            .and_then(|c| url.join(c).ok())
            .map(super::crawl::normalize)
            .filter(|c| *c != url && all_urls.contains(c.as_str()));
        if let Some(canonical) = canonical {
            report
                .skipped
                .push((url.to_string(), format!("canonical is {canonical}")));
            continue;
        }
        add_page(
            &mut report,
            &mut bodies,
            url.to_string(),
            extracted,
            &rel_url,
        );
    }
    report.covers = Some(folder_prefix(&root, base_url)?);
    Ok(report)
}

/// Reads uploaded documents: each becomes a page cited as `base` joined with its name.
/// Nothing is read from disk; the files' kinds come from their names' extensions.
pub fn uploaded(base: &Url, files: &[UploadedFile]) -> anyhow::Result<CrawlReport> {
    let mut report = CrawlReport::default();
    let mut bodies = std::collections::HashSet::new();
    for file in files {
        let url = file_url(base, [file.name.clone()])?.to_string();
        let path = Path::new(&file.name);
        if file.bytes.len() > max_bytes(path) {
            let reason = "larger than the page size limit".to_string();
            report.skipped.push((url, reason));
            continue;
        }
        if let Some(extracted) = read_file(path, &file.bytes, &url, &mut report) {
            add_page(&mut report, &mut bodies, url, extracted, &file.name);
        }
    }
    // An upload has no next time: a reader out of time skips its file, with the reason.
    let failed = std::mem::take(&mut report.failed);
    report.skipped.extend(failed);
    Ok(report)
}

/// The most bytes a file of `path`'s kind may have: a document's limit, or a page's.
pub fn max_bytes(path: &Path) -> usize {
    match documents::Kind::of_path(path) {
        Some(_) => documents::MAX_DOCUMENT_BYTES,
        None => MAX_FILE_BYTES as usize,
    }
}

/// Whether docent reads files named like `path` (by extension).
pub fn is_supported(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    SUPPORTED.contains(&ext.as_str())
}

/// The extensions of the files a folder ingest or an upload reads.
pub const SUPPORTED: &[&str] = &["html", "htm", "md", "markdown", "txt", "docx", "pdf"];

/// `base` with `segments` appended to its path, segment by segment, so `#`, `?`, `\\` or
/// `:` in a file name stay in the path.
fn file_url(base: &Url, segments: impl IntoIterator<Item = String>) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("{base} cannot hold paths"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A file's content, or `None` with why it was skipped (or failed for now) in `report`.
fn read_file(
    path: &Path,
    bytes: &[u8],
    url: &str,
    report: &mut CrawlReport,
) -> Option<extract::Extracted> {
    let extracted = match documents::Kind::of_path(path) {
        Some(kind) => match documents::extract(kind, bytes) {
            Ok(extracted) => extracted,
            // A reader out of time may do next time: the file's last state stays.
            Err(unread) if unread.transient => {
                report.failed.push((url.to_string(), unread.reason));
                return None;
            }
            Err(unread) => {
                report.skipped.push((url.to_string(), unread.reason));
                return None;
            }
        },
        None => extract_file(path, bytes),
    };
    if extracted.refresh_to.is_some() || extracted.noindex {
        let reason = "redirect stub or noindex".to_string();
        report.skipped.push((url.to_string(), reason));
        return None;
    }
    Some(extracted)
}

/// Adds a read file as a page (titled `fallback_title` if it has no title of its own),
/// unless it has no text or the same text as a page already added.
fn add_page(
    report: &mut CrawlReport,
    bodies: &mut std::collections::HashSet<String>,
    url: String,
    mut extracted: extract::Extracted,
    fallback_title: &str,
) {
    if extracted.title.is_empty() {
        extracted.title = fallback_title.to_string();
    }
    if extracted.is_empty() {
        report.skipped.push((url, "no text".into()));
        return;
    }
    let (content_hash, body_hash) = super::page_hashes(&extracted);
    if !bodies.insert(body_hash.clone()) {
        report.skipped.push((url, "duplicate content".into()));
        return;
    }
    report.pages.push(CrawledPage {
        url,
        extracted,
        content_hash,
        body_hash,
        etag: None,
        last_modified: None,
        links: Vec::new(),
    });
}

/// A web page or text file's content, by its extension.
fn extract_file(path: &Path, bytes: &[u8]) -> extract::Extracted {
    let text = String::from_utf8_lossy(bytes);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => extract::extract_html(&text),
        "md" | "markdown" => extract::extract_markdown(&text),
        _ => extract::extract_text(&text),
    }
}

/// The start of every page URL a scan of `root` gives: the folder's own URL, ending in `/`.
fn folder_prefix(root: &Path, base_url: Option<&Url>) -> anyhow::Result<String> {
    let mut prefix = match base_url {
        Some(base) => {
            let mut base = base.clone();
            base.set_query(None);
            base.set_fragment(None);
            base.to_string()
        }
        None => Url::from_directory_path(root)
            .map_err(|_| anyhow::anyhow!("cannot make a URL of {}", root.display()))?
            .to_string(),
    };
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(prefix)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() && is_supported(&path) {
            out.push(path);
        }
    }
    Ok(())
}
