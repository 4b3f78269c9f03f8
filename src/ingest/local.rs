//! Ingest from a local folder: `.html`, `.md`, `.txt`, `.docx` and `.pdf` files, cited under
//! `--base-url`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use url::Url;

use super::crawl::{CrawlReport, CrawledPage};
use super::{documents, extract};

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
            Some(base) => {
                // Segment by segment, so `#`, `?`, `\\` or `:` in a file name stay in the path.
                let mut url = base.clone();
                url.path_segments_mut()
                    .map_err(|_| anyhow::anyhow!("--base-url {base} cannot hold paths"))?
                    .pop_if_empty()
                    .extend(
                        rel.components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
                    );
                url
            }
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
        let document = documents::Kind::of_path(&path);
        let limit = match document {
            Some(_) => documents::MAX_DOCUMENT_BYTES as u64,
            None => MAX_FILE_BYTES,
        };
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > limit {
            report
                .skipped
                .push((url.to_string(), "larger than the page size limit".into()));
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        let mut extracted = match document {
            Some(kind) => match documents::extract(kind, &bytes) {
                Ok(extracted) => extracted,
                // A reader out of time may do next time: the file's last state stays.
                Err(unread) if unread.transient => {
                    report.failed.push((url.to_string(), unread.reason));
                    continue;
                }
                Err(unread) => {
                    report.skipped.push((url.to_string(), unread.reason));
                    continue;
                }
            },
            None => extract_file(&path, &bytes),
        };
        if extracted.refresh_to.is_some() || extracted.noindex {
            report
                .skipped
                .push((url.to_string(), "redirect stub or noindex".into()));
            continue;
        }
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
        if extracted.title.is_empty() {
            extracted.title = rel_url.clone();
        }
        if extracted.is_empty() {
            report.skipped.push((url.to_string(), "no text".into()));
            continue;
        }
        let (content_hash, body_hash) = super::page_hashes(&extracted);
        if !bodies.insert(body_hash.clone()) {
            report
                .skipped
                .push((url.to_string(), "duplicate content".into()));
            continue;
        }
        report.pages.push(CrawledPage {
            url: url.to_string(),
            extracted,
            content_hash,
            body_hash,
            etag: None,
            last_modified: None,
            links: Vec::new(),
        });
    }
    report.covers = Some(folder_prefix(&root, base_url)?);
    Ok(report)
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
        } else if kind.is_file() {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if matches!(
                ext.as_str(),
                "html" | "htm" | "md" | "markdown" | "txt" | "docx" | "pdf"
            ) {
                out.push(path);
            }
        }
    }
    Ok(())
}
