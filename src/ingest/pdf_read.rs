//! Reads a PDF with pdf_oxide (chosen by measurement on 42 real PDFs, README "Documents"):
//! each page's text in reading order, the outline with its pages resolved, the title from
//! the document information. Untrusted input: call it only through `isolate`.

use pdf_oxide::object::Object;
use pdf_oxide::{Destination, OutlineItem, PdfDocument};

use super::pdf::{OutlineEntry, PdfText};

/// Outline entries taken at most (a malformed outline can loop or be huge).
const MAX_OUTLINE: usize = 10_000;
/// The deepest outline level followed.
const MAX_DEPTH: usize = 16;
/// The most text taken from one PDF (compressed streams can expand far past the file).
pub const MAX_TEXT_BYTES: usize = 32 * 1024 * 1024;
/// What pdf_oxide calls a bookmark without a title.
const UNTITLED: &str = "(No Title)";

/// The pages, outline and title of a PDF, or why it cannot be read.
pub fn read(bytes: &[u8]) -> Result<PdfText, String> {
    let doc = PdfDocument::from_bytes(bytes.to_vec())
        .map_err(|e| format!("not a readable PDF file ({e})"))?;
    let count = doc
        .page_count()
        .map_err(|e| format!("not a readable PDF file ({e})"))?;
    let mut pages = Vec::with_capacity(count.min(100_000));
    let mut total = 0;
    for index in 0..count {
        // A page that fails alone is an empty page: the rest of the document still counts.
        // Control characters cost six bytes each in JSON: dropped here, as later anyway.
        let text: String = doc
            .extract_text(index)
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
            .collect();
        total += text.len();
        if total > MAX_TEXT_BYTES {
            return Err(format!(
                "more than {} MB of text",
                MAX_TEXT_BYTES / (1024 * 1024)
            ));
        }
        pages.push(text);
    }
    let mut outline = Vec::new();
    if let Ok(Some(items)) = doc.get_outline() {
        flatten(&items, 0, &mut outline);
    }
    Ok(PdfText {
        title: title(&doc),
        pages,
        outline,
    })
}

fn flatten(items: &[OutlineItem], level: usize, out: &mut Vec<OutlineEntry>) {
    for item in items {
        if out.len() >= MAX_OUTLINE || level >= MAX_DEPTH {
            return;
        }
        let page = match item.dest {
            Some(Destination::PageIndex(index)) => u32::try_from(index + 1).ok(),
            _ => None,
        };
        if item.title != UNTITLED {
            out.push(OutlineEntry {
                level,
                title: clip(&item.title),
                page,
            });
        }
        flatten(&item.children, level + 1, out);
    }
}

/// The document information's `/Title`, when it has one worth showing.
fn title(doc: &PdfDocument) -> Option<String> {
    let trailer = doc.trailer().as_dict()?;
    let info = match trailer.get("Info")? {
        Object::Reference(r) => doc.load_object(*r).ok()?,
        other => other.clone(),
    };
    match info.as_dict()?.get("Title")? {
        Object::String(bytes) => {
            Some(clip(&decode_text_string(bytes))).filter(|t| !t.trim().is_empty())
        }
        _ => None,
    }
}

/// A title as handed over: at most 300 characters, no control characters.
fn clip(title: &str) -> String {
    title
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A PDF text string: UTF-16BE after a byte-order mark, UTF-8 after its mark, else
/// PDFDocEncoding (Latin-1 for the letters that matter in a title).
fn decode_text_string(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    bytes.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_strings_decode_by_their_mark() {
        assert_eq!(decode_text_string(b"Caf\xe9"), "Café");
        assert_eq!(decode_text_string(b"\xfe\xff\x00H\x00i"), "Hi");
        assert_eq!(decode_text_string(b"\xef\xbb\xbfS\xc3\xbc"), "Sü");
    }

    #[test]
    fn garbage_is_a_reason() {
        assert!(read(b"%PDF-1.4\nnot really").is_err());
        assert!(read(b"").is_err());
    }
}
