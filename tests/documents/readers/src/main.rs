//! Runs one candidate PDF reader on one file and writes its pages' text, separated by form
//! feeds: `pdf-readers CANDIDATE FILE OUT`. A reader's error is a panic here on purpose:
//! compare.py tells errors from crashes by the message.
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (candidate, file, out) = (&args[1], &args[2], &args[3]);
    let bytes = std::fs::read(file).expect("read the file");
    let pages: Vec<String> = match candidate.as_str() {
        "pdf-extract" => pdf_extract::extract_text_from_mem_by_pages(&bytes).expect("error"),
        "unpdf" => {
            let doc = unpdf::parse_bytes(&bytes).expect("error");
            doc.pages.iter().map(|p| p.plain_text()).collect()
        }
        "pdf_oxide" => {
            let doc = pdf_oxide::PdfDocument::from_bytes(bytes).expect("error");
            let n = doc.page_count().expect("error");
            (0..n).map(|i| doc.extract_text(i).unwrap_or_default()).collect()
        }
        other => panic!("unknown candidate {other}"),
    };
    let mut f = std::fs::File::create(out).expect("create the output");
    f.write_all(pages.join("\u{c}").as_bytes()).expect("write the output");
}
