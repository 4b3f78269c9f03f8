//! Word documents (DOCX: a zip of XML parts) to the same `Extracted` an HTML page gives:
//! headings from the document's heading styles (or outline levels) as sections, list items
//! and table rows kept readable, the title from the document's properties. Pure: bytes in,
//! text out, every part read within a size cap (a zip can claim any size).

use std::collections::HashMap;
use std::io::Read;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::extract::{Extracted, Section};

/// The most any one XML part may inflate to: a zip bomb stops here.
const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;

/// The media type a server gives a DOCX file.
pub const MEDIA_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// The text of a DOCX file, or why there is none to take (a per-file reason).
pub fn extract_docx(bytes: &[u8]) -> Result<Extracted, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a DOCX file (zip: {e})"))?;
    let main = main_part(&mut archive);
    let document = read_part(&mut archive, &main)?.ok_or(format!("not a DOCX file (no {main})"))?;
    // The optional parts: broken ones cost their headings or title, not the text.
    let styles = match read_part(&mut archive, "word/styles.xml") {
        Ok(Some(xml)) => heading_styles(&xml).unwrap_or_default(),
        _ => HashMap::new(),
    };
    let title = match read_part(&mut archive, "docProps/core.xml") {
        Ok(Some(xml)) => core_title(&xml).ok().flatten(),
        _ => None,
    };
    let mut out = body_sections(&document, &styles)?;
    if let Some(title) = title {
        out.title = title;
    }
    Ok(out)
}

/// The main part's name, as the package's relationships give it (`word/document.xml`
/// unless they say otherwise, as some producers do).
fn main_part<R: Read + std::io::Seek>(archive: &mut zip::ZipArchive<R>) -> String {
    const DEFAULT: &str = "word/document.xml";
    let Ok(Some(rels)) = read_part(archive, "_rels/.rels") else {
        return DEFAULT.into();
    };
    let mut reader = Reader::from_str(&rels);
    while let Ok(event) = reader.read_event() {
        match event {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == "Relationship" => {
                let main = attribute(&e, "Type").is_some_and(|t| t.ends_with("/officeDocument"));
                if let Some(target) = attribute(&e, "Target").filter(|_| main) {
                    return target.trim_start_matches('/').to_string();
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    DEFAULT.into()
}

/// One part of the archive as text, `None` when it is absent.
fn read_part<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Option<String>, String> {
    let part = match archive.by_name(name) {
        Ok(part) => part,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("cannot read {name}: {e}")),
    };
    let mut bytes = Vec::new();
    part.take(MAX_PART_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > MAX_PART_BYTES {
        return Err(format!("{name} inflates past {MAX_PART_BYTES} bytes"));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Heading level (1 = top) by style id: styles named `heading N` or `Title`, or with an
/// outline level, and styles based on one of those.
fn heading_styles(xml: &str) -> Result<HashMap<String, usize>, String> {
    let mut levels = HashMap::new();
    let mut based_on: HashMap<String, String> = HashMap::new();
    let mut reader = Reader::from_str(xml);
    let mut current: Option<String> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("word/styles.xml: {e}"))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "style" => current = attribute(e, "styleId"),
                "name" => {
                    if let (Some(id), Some(name)) = (&current, attribute(e, "val"))
                        && let Some(level) = named_heading_level(&name)
                    {
                        levels.insert(id.clone(), level);
                    }
                }
                "outlineLvl" => {
                    let level = attribute(e, "val")
                        .and_then(|v| v.parse::<usize>().ok())
                        .filter(|l| *l < 9);
                    if let (Some(id), Some(level)) = (&current, level) {
                        levels.entry(id.clone()).or_insert(level + 1);
                    }
                }
                "basedOn" => {
                    if let (Some(id), Some(base)) = (&current, attribute(e, "val")) {
                        based_on.insert(id.clone(), base);
                    }
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "style" => current = None,
            Event::Eof => break,
            _ => {}
        }
    }
    // A style based on a heading style is a heading of that level (a chain of a few).
    for _ in 0..4 {
        for (id, base) in &based_on {
            if let Some(level) = levels.get(base).copied() {
                levels.entry(id.clone()).or_insert(level);
            }
        }
    }
    levels.retain(|_, level| (1..=9).contains(level));
    Ok(levels)
}

/// `heading 2` → 2, `Title` → 1 (as Word names its built-in styles, any case).
fn named_heading_level(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    if name == "title" {
        return Some(1);
    }
    name.strip_prefix("heading")?.trim().parse().ok()
}

/// `dc:title` from docProps/core.xml, when it says something.
fn core_title(xml: &str) -> Result<Option<String>, String> {
    let mut reader = Reader::from_str(xml);
    let mut in_title = false;
    let mut title = String::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("docProps/core.xml: {e}"))?
        {
            Event::Start(e) if e.local_name().as_ref() == "title" => in_title = true,
            Event::End(e) if e.local_name().as_ref() == "title" => in_title = false,
            Event::Text(t) if in_title => title.push_str(&t),
            Event::GeneralRef(r) if in_title => title.push_str(&entity(&r)),
            Event::Eof => break,
            _ => {}
        }
    }
    let title = super::extract::collapse_whitespace(&title);
    Ok((!title.is_empty()).then_some(title))
}

/// A table being read: the current row's cells, and what each grid column last held, so a
/// cell merged with the one above (`w:vMerge`) repeats its text and every row reads alone.
#[derive(Default)]
struct Table {
    cells: Vec<String>,
    /// The grid column the current cell starts at, its width (`w:gridSpan`), and whether
    /// it continues the cell above.
    column: usize,
    span: usize,
    continues: bool,
    above: HashMap<usize, String>,
}

impl Table {
    fn start_cell(&mut self) {
        self.cells.push(String::new());
        self.span = 1;
        self.continues = false;
    }

    fn end_cell(&mut self) {
        if let Some(cell) = self.cells.last_mut() {
            match self.above.get(&self.column) {
                Some(above) if self.continues && cell.is_empty() => cell.clone_from(above),
                _ => {
                    self.above.insert(self.column, cell.clone());
                }
            }
        }
        self.column += self.span.max(1);
    }
}

/// The most text one document may give, headings repeated per section included: merged
/// cells and headings are copied, so a small part could otherwise grow without bound.
const MAX_TEXT_BYTES: usize = 32 * 1024 * 1024;
/// Headings longer than this are cut: each section repeats its whole heading path.
const MAX_HEADING_CHARS: usize = 300;

/// Elements whose content is not the document's current text: the alternative for older
/// readers, and what tracked changes replaced (the paragraph's former style or list).
const SKIPPED: &[&str] = &[
    "Fallback",
    "pPrChange",
    "rPrChange",
    "tblPrChange",
    "tcPrChange",
    "trPrChange",
    "sectPrChange",
];

/// A paragraph being read: its text, heading level, and whether it is a list item.
#[derive(Default)]
struct Paragraph {
    text: String,
    level: Option<usize>,
    listed: bool,
}

/// Paragraph and table state while walking word/document.xml.
#[derive(Default)]
struct Walk {
    out: Extracted,
    /// (level, heading) from the top.
    path: Vec<(usize, String)>,
    /// The text under the current heading.
    text: String,
    /// Open paragraphs, innermost last (a text box's paragraphs sit inside one).
    paragraphs: Vec<Paragraph>,
    /// Open tables, innermost last (a table in a cell nests).
    tables: Vec<Table>,
    in_text: bool,
    /// Bytes of text given so far, against `MAX_TEXT_BYTES`.
    written: usize,
}

impl Walk {
    /// Text of the innermost open paragraph (none outside paragraphs).
    fn push_text(&mut self, text: &str) {
        if let Some(paragraph) = self.paragraphs.last_mut() {
            paragraph.text.push_str(text);
        }
    }

    /// A paragraph ended: a heading starts a section, text joins the current one (or the
    /// current table cell).
    fn end_paragraph(&mut self) {
        let Some(Paragraph {
            text,
            level,
            listed,
        }) = self.paragraphs.pop()
        else {
            return;
        };
        let paragraph = super::extract::collapse_whitespace(&text);
        if paragraph.is_empty() {
            return;
        }
        self.written += paragraph.len();
        if let Some(row) = self.tables.last_mut().map(|t| &mut t.cells) {
            if row.is_empty() {
                // A paragraph straight in a row (malformed): a cell of its own.
                row.push(String::new());
            }
            if let Some(cell) = row.last_mut() {
                if !cell.is_empty() {
                    cell.push(' ');
                }
                cell.push_str(&paragraph);
            }
            return;
        }
        match level {
            Some(level) => self.start_section(level, paragraph),
            None => {
                if listed {
                    self.text.push_str("- ");
                }
                self.text.push_str(&paragraph);
                self.text.push('\n');
            }
        }
    }

    /// A heading of `level`: the text so far is a section, and the path moves on.
    fn start_section(&mut self, level: usize, heading: String) {
        self.flush();
        let heading = match heading.char_indices().nth(MAX_HEADING_CHARS) {
            Some((cut, _)) => heading[..cut].to_string(),
            None => heading,
        };
        if self.out.title.is_empty() && level == 1 {
            self.out.title = heading.clone();
        }
        self.path.retain(|(l, _)| *l < level);
        self.path.push((level, heading));
    }

    /// A table row ended: its cells on one line, ` | ` between them.
    fn end_row(&mut self) {
        let Some(table) = self.tables.last_mut() else {
            return;
        };
        table.column = 0;
        let cells = std::mem::take(&mut table.cells);
        let cells: Vec<String> = cells.into_iter().filter(|c| !c.is_empty()).collect();
        if cells.is_empty() {
            return;
        }
        let line = cells.join(" | ");
        self.written += line.len();
        if self.tables.len() > 1 {
            // A table inside a cell: its rows join that cell.
            let outer = self.tables.len() - 2;
            if let Some(cell) = self.tables[outer].cells.last_mut() {
                if !cell.is_empty() && !cell.ends_with(' ') {
                    cell.push(' ');
                }
                cell.push_str(&line);
                cell.push_str("; ");
            }
        } else {
            self.text.push_str(&line);
            self.text.push('\n');
        }
    }

    fn flush(&mut self) {
        let body = self.text.trim();
        if !body.is_empty() {
            let heading_path: Vec<String> = self.path.iter().map(|(_, h)| h.clone()).collect();
            self.written += heading_path.iter().map(String::len).sum::<usize>();
            self.out.sections.push(Section {
                heading_path,
                text: body.to_string(),
                anchor: None,
            });
        }
        self.text.clear();
    }
}

/// The body's paragraphs and tables as sections under their headings.
fn body_sections(xml: &str, styles: &HashMap<String, usize>) -> Result<Extracted, String> {
    let mut reader = Reader::from_str(xml);
    let mut walk = Walk::default();
    // Depth inside elements whose content is skipped (`SKIPPED`).
    let mut skipped = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("word/document.xml: {e}"))?;
        match &event {
            Event::Start(e) if SKIPPED.contains(&e.local_name().as_ref()) => skipped += 1,
            Event::End(e) if SKIPPED.contains(&e.local_name().as_ref()) => {
                skipped = skipped.saturating_sub(1);
                continue;
            }
            _ => {}
        }
        if skipped > 0 && !matches!(event, Event::Eof) {
            continue;
        }
        match event {
            Event::Start(e) => start(&mut walk, &e, styles, false),
            Event::Empty(e) => start(&mut walk, &e, styles, true),
            Event::Text(t) if walk.in_text => walk.push_text(&t),
            Event::GeneralRef(r) if walk.in_text => walk.push_text(&entity(&r)),
            Event::End(e) => end(&mut walk, e.local_name().as_ref()),
            Event::Eof => break,
            _ => {}
        }
        if walk.written > MAX_TEXT_BYTES {
            return Err(format!(
                "the document's text passes {} MB",
                MAX_TEXT_BYTES / (1024 * 1024)
            ));
        }
    }
    walk.flush();
    Ok(walk.out)
}

/// An element closes in word/document.xml.
fn end(walk: &mut Walk, name: &str) {
    match name {
        "t" => walk.in_text = false,
        "p" => walk.end_paragraph(),
        "tc" => {
            if let Some(table) = walk.tables.last_mut() {
                table.end_cell();
            }
        }
        "tr" => walk.end_row(),
        "tbl" => {
            walk.tables.pop();
        }
        _ => {}
    }
}

/// An element opens (or stands alone, `empty`) in word/document.xml.
fn start(walk: &mut Walk, e: &BytesStart<'_>, styles: &HashMap<String, usize>, empty: bool) {
    let name = e.local_name();
    let name = name.as_ref();
    match name {
        "p" if !empty => walk.paragraphs.push(Paragraph::default()),
        "t" if !empty => walk.in_text = true,
        "tbl" if !empty => walk.tables.push(Table::default()),
        "tc" if !empty => {
            if let Some(table) = walk.tables.last_mut() {
                table.start_cell();
            }
        }
        "gridSpan" => {
            let span = attribute(e, "val").and_then(|v| v.parse::<usize>().ok());
            if let (Some(table), Some(span)) = (walk.tables.last_mut(), span) {
                table.span = span.clamp(1, 64);
            }
        }
        "vMerge" => {
            let restart = attribute(e, "val").is_some_and(|v| v == "restart");
            if let Some(table) = walk.tables.last_mut() {
                table.continues = !restart;
            }
        }
        _ => {
            if let Some(paragraph) = walk.paragraphs.last_mut() {
                paragraph_part(paragraph, name, e, styles);
            }
        }
    }
}

/// What an element inside a paragraph adds to it: spacing, its style's heading level, its
/// list membership.
fn paragraph_part(
    p: &mut Paragraph,
    name: &str,
    e: &BytesStart<'_>,
    styles: &HashMap<String, usize>,
) {
    match name {
        "tab" | "br" | "cr" => p.text.push(' '),
        "noBreakHyphen" => p.text.push('-'),
        "pStyle" => {
            if let Some(level) = attribute(e, "val").and_then(|id| styles.get(&id).copied()) {
                p.level = Some(level);
            }
        }
        "outlineLvl" => {
            let level = attribute(e, "val").and_then(|v| v.parse::<usize>().ok());
            if let Some(level) = level.filter(|l| *l < 9) {
                p.level = Some(level + 1);
            }
        }
        "numPr" => p.listed = true,
        // Numbering 0 is "none": a paragraph taken out of a list.
        "numId" if attribute(e, "val").as_deref() == Some("0") => p.listed = false,
        _ => {}
    }
}

/// An attribute's value by local name (`w:val` → `val`).
fn attribute(e: &BytesStart<'_>, local: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// The text an entity reference stands for (`&amp;`, `&#x41;`); unknown ones as written.
fn entity(r: &quick_xml::events::BytesRef<'_>) -> String {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return c.to_string();
    }
    match &**r {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        other => format!("&{other};"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A DOCX file of these parts, stored uncompressed.
    fn docx(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, text) in parts {
            zip.start_file(*name, options).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    const STYLES: &str = r#"<w:styles xmlns:w="w">
        <w:style w:styleId="H1"><w:name w:val="heading 1"/></w:style>
        <w:style w:styleId="Kop2"><w:name w:val="Kop 2"/><w:pPr><w:outlineLvl w:val="1"/></w:pPr></w:style>
        <w:style w:styleId="Fancy"><w:name w:val="Fancy"/><w:basedOn w:val="Kop2"/></w:style>
        <w:style w:styleId="Body"><w:name w:val="Body Text"/></w:style>
    </w:styles>"#;

    fn paragraph(style: &str, text: &str) -> String {
        format!(
            r#"<w:p><w:pPr><w:pStyle w:val="{style}"/></w:pPr><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>"#
        )
    }

    #[test]
    fn headings_lists_and_tables_keep_their_structure() {
        let body = [
            paragraph("Body", "Before any heading."),
            paragraph("H1", "Returns"),
            paragraph("Body", "Send it back within 30 days &amp; keep the receipt."),
            r#"<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t>Pack it</w:t></w:r></w:p>"#.into(),
            paragraph("Kop2", "Refunds"),
            r#"<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Plan</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Days</w:t></w:r></w:p></w:tc></w:tr>
               <w:tr><w:tc><w:p><w:r><w:t>Basic</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>1</w:t><w:tab/><w:t>4</w:t></w:r></w:p></w:tc></w:tr>
               <w:tr><w:tc><w:tcPr><w:vMerge w:val="restart"/></w:tcPr><w:p><w:r><w:t>Gold</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>7</w:t></w:r></w:p></w:tc></w:tr>
               <w:tr><w:tc><w:tcPr><w:vMerge/></w:tcPr><w:p/></w:tc><w:tc><w:p><w:r><w:t>9</w:t></w:r></w:p></w:tc></w:tr>
               <w:tr><w:tc><w:tcPr><w:gridSpan w:val="2"/></w:tcPr><w:p><w:r><w:t>Ask us</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"#.into(),
            paragraph("Fancy", "Exchanges"),
            r#"<w:p><mc:AlternateContent><mc:Choice><w:r><w:t>Shown once</w:t></w:r></mc:Choice><mc:Fallback><w:r><w:t>Shown twice</w:t></w:r></mc:Fallback></mc:AlternateContent></w:p>"#.into(),
            paragraph("H1", "Contact &#x41;"),
            r#"<w:p><w:pPr><w:outlineLvl w:val="2"/></w:pPr><w:r><w:t>Phone</w:t></w:r></w:p>"#.into(),
            paragraph("Body", "Call us."),
        ]
        .concat();
        let document = format!(
            r#"<w:document xmlns:w="w" xmlns:mc="mc"><w:body>{body}</w:body></w:document>"#
        );
        let core = r#"<cp:coreProperties xmlns:cp="c" xmlns:dc="d"><dc:title>Store policy</dc:title></cp:coreProperties>"#;
        let file = docx(&[
            ("word/document.xml", &document),
            ("word/styles.xml", STYLES),
            ("docProps/core.xml", core),
        ]);
        let extracted = extract_docx(&file).unwrap();
        assert_eq!(extracted.title, "Store policy");
        let sections: Vec<(String, String)> = extracted
            .sections
            .iter()
            .map(|s| (s.heading_path.join(" > "), s.text.clone()))
            .collect();
        let expected = [
            ("", "Before any heading."),
            (
                "Returns",
                "Send it back within 30 days & keep the receipt.\n- Pack it",
            ),
            (
                "Returns > Refunds",
                "Plan | Days\nBasic | 1 4\nGold | 7\nGold | 9\nAsk us",
            ),
            ("Returns > Exchanges", "Shown once"),
            ("Contact A > Phone", "Call us."),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(h, t)| (h.to_string(), t.to_string()))
            .collect();
        assert_eq!(sections, expected);
    }

    #[test]
    fn text_boxes_tracked_changes_and_odd_characters_read_as_word_shows_them() {
        let body = [
            // A text box inside a paragraph: its own paragraph, the outer one kept whole.
            r#"<w:p><w:r><w:t>Before </w:t></w:r><w:r><w:txbxContent><w:p><w:r><w:t>Boxed</w:t></w:r></w:p></w:txbxContent></w:r><w:r><w:t>after</w:t></w:r></w:p>"#,
            // Once a heading, now plain text: the tracked former style is not read.
            r#"<w:p><w:pPr><w:pStyle w:val="Body"/><w:pPrChange><w:pPr><w:pStyle w:val="H1"/></w:pPr></w:pPrChange></w:pPr><w:r><w:t>Was a heading</w:t></w:r></w:p>"#,
            "<w:p><w:r><w:t>e</w:t><w:noBreakHyphen/><w:t>mail\u{0}</w:t></w:r></w:p>",
            r#"<w:p><w:pPr><w:numPr><w:numId w:val="0"/></w:numPr></w:pPr><w:r><w:t>Not listed</w:t></w:r></w:p>"#,
        ]
        .concat();
        let document = format!(r#"<w:document xmlns:w="w"><w:body>{body}</w:body></w:document>"#);
        let file = docx(&[
            ("word/document.xml", &document),
            ("word/styles.xml", STYLES),
        ]);
        let kind = crate::ingest::documents::Kind::Docx;
        let extracted = crate::ingest::documents::extract(kind, &file).unwrap();
        assert_eq!(extracted.sections.len(), 1, "{extracted:?}");
        assert!(extracted.sections[0].heading_path.is_empty());
        assert_eq!(
            extracted.sections[0].text,
            "Boxed\nBefore after\nWas a heading\ne-mail\nNot listed"
        );
    }

    #[test]
    fn text_copied_past_the_cap_is_refused_not_held() {
        // One 1 MB cell merged down 40 rows would be 40 MB of text.
        let big = "x".repeat(1024 * 1024);
        let first = format!(
            r#"<w:tr><w:tc><w:tcPr><w:vMerge w:val="restart"/></w:tcPr><w:p><w:r><w:t>{big}</w:t></w:r></w:p></w:tc></w:tr>"#
        );
        let more = r#"<w:tr><w:tc><w:tcPr><w:vMerge/></w:tcPr><w:p/></w:tc></w:tr>"#.repeat(40);
        let document =
            format!("<w:document><w:body><w:tbl>{first}{more}</w:tbl></w:body></w:document>");
        let reason = extract_docx(&docx(&[("word/document.xml", &document)])).unwrap_err();
        assert!(reason.contains("text passes 32 MB"), "{reason}");
    }

    #[test]
    fn broken_files_are_reasons() {
        let no_document = docx(&[("word/styles.xml", STYLES)]);
        let reason = extract_docx(&no_document).unwrap_err();
        assert!(reason.contains("no word/document.xml"), "{reason}");
        let bad_xml = docx(&[("word/document.xml", "<w:document><w:body><w:p></w:body>")]);
        let reason = extract_docx(&bad_xml).unwrap_err();
        assert!(reason.contains("word/document.xml"), "{reason}");
        // Without styles or properties the text is still read, untitled.
        let bare = docx(&[(
            "word/document.xml",
            "<w:document><w:body><w:p><w:r><w:t>Hi</w:t></w:r></w:p></w:body></w:document>",
        )]);
        let extracted = extract_docx(&bare).unwrap();
        assert_eq!(
            (extracted.title.as_str(), extracted.body_text().as_str()),
            ("", "Hi")
        );
    }
}
