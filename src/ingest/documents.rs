//! Documents beside web pages (DOCX and PDF): which files and responses are documents, and
//! their extraction isolated, so one bad file is a reason recorded on that file, never a
//! panic that takes the ingest or the server down (PDF readers run in a child process,
//! `isolate`).

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::extract::Extracted;

/// The largest document read, from a folder or a crawl (a manual with its pictures).
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;

/// Media types servers give any file they know nothing about (S3's default among them):
/// then the path's extension decides.
const GENERIC_TYPES: &[&str] = &[
    "application/octet-stream",
    "binary/octet-stream",
    "application/zip",
    "application/x-zip-compressed",
];

/// Why a document has no text. `transient` when another try may read it (the reader ran
/// out of time or could not start): then the document's last indexed state stays.
#[derive(Debug, Clone, PartialEq)]
pub struct Unread {
    pub reason: String,
    pub transient: bool,
}

impl Unread {
    /// A reason that another try will not change.
    pub fn lasting(reason: impl Into<String>) -> Unread {
        Unread {
            reason: reason.into(),
            transient: false,
        }
    }
}

/// A kind of document docent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docx,
    Pdf,
}

impl Kind {
    /// The kind a file name's extension says.
    pub fn of_path(path: &std::path::Path) -> Option<Kind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "docx" => Some(Kind::Docx),
            "pdf" => Some(Kind::Pdf),
            _ => None,
        }
    }

    /// The kind a response is: by its media type, or by its URL's extension when the
    /// server only says `application/octet-stream` (as plain file servers often do).
    pub fn of_response(content_type: &str, url: &url::Url) -> Option<Kind> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case(super::docx::MEDIA_TYPE) {
            return Some(Kind::Docx);
        }
        if media.eq_ignore_ascii_case(super::pdf::MEDIA_TYPE)
            || media.eq_ignore_ascii_case("application/x-pdf")
        {
            return Some(Kind::Pdf);
        }
        let generic =
            media.is_empty() || GENERIC_TYPES.iter().any(|g| media.eq_ignore_ascii_case(g));
        let path = url.path().to_ascii_lowercase();
        match () {
            _ if generic && path.ends_with(".docx") => Some(Kind::Docx),
            _ if generic && path.ends_with(".pdf") => Some(Kind::Pdf),
            _ => None,
        }
    }
}

/// The text of a document, or the reason there is none (kept on the skipped file). A
/// panic inside a parser is caught and becomes such a reason.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted, Unread> {
    let run = || match kind {
        Kind::Docx => super::docx::extract_docx(bytes).map_err(Unread::lasting),
        Kind::Pdf => super::isolate::read_pdf(bytes)
            .and_then(|pdf| super::pdf::to_extracted(pdf).map_err(Unread::lasting)),
    };
    let mut extracted = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(Unread::lasting(
            "the document could not be read (its parser failed)",
        ))
    })?;
    // As for pages: no NUL reaches a store (PostgreSQL's text refuses it).
    let without_nul = |text: &mut String| text.retain(|c| c != '\0');
    without_nul(&mut extracted.title);
    for section in &mut extracted.sections {
        without_nul(&mut section.text);
        section.heading_path.iter_mut().for_each(without_nul);
    }
    if extracted.is_empty() {
        return Err(Unread::lasting("no text in the document"));
    }
    Ok(extracted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_told_by_extension_or_media_type() {
        let path = std::path::Path::new("a/Guide.DOCX");
        assert_eq!(Kind::of_path(path), Some(Kind::Docx));
        assert_eq!(Kind::of_path(std::path::Path::new("a/guide.doc")), None);
        assert_eq!(
            Kind::of_path(std::path::Path::new("b.Pdf")),
            Some(Kind::Pdf)
        );
        let pdf = url::Url::parse("https://h.example/price-list.pdf").unwrap();
        let no_ext = url::Url::parse("https://h.example/download?id=7").unwrap();
        assert_eq!(
            Kind::of_response("application/pdf", &no_ext),
            Some(Kind::Pdf)
        );
        assert_eq!(
            Kind::of_response("application/octet-stream", &pdf),
            Some(Kind::Pdf)
        );
        assert_eq!(Kind::of_response("text/html", &pdf), None);
        let url = url::Url::parse("https://h.example/files/guide.docx?v=2").unwrap();
        let page = url::Url::parse("https://h.example/guide").unwrap();
        let media = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(Kind::of_response(media, &page), Some(Kind::Docx));
        assert_eq!(
            Kind::of_response("application/octet-stream", &url),
            Some(Kind::Docx)
        );
        assert_eq!(Kind::of_response("", &url), Some(Kind::Docx));
        assert_eq!(Kind::of_response("text/html", &url), None);
        assert_eq!(Kind::of_response("application/octet-stream", &page), None);
        assert_eq!(
            Kind::of_response("binary/octet-stream", &url),
            Some(Kind::Docx)
        );
        assert_eq!(Kind::of_response("application/zip", &url), Some(Kind::Docx));
        assert_eq!(Kind::of_response("application/zip", &page), None);
    }

    #[test]
    fn a_file_that_is_not_a_document_is_a_reason_not_a_panic() {
        let reason = extract(Kind::Docx, b"%PDF-1.4 not a zip")
            .unwrap_err()
            .reason;
        assert!(reason.contains("not a DOCX file"), "{reason}");
        assert!(extract(Kind::Docx, &[]).is_err());
    }
}
