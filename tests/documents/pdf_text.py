"""pypdf's reading of a PDF, the independent oracle of the PDF-ingest tests: its title,
each page's text and the outline (level, title, 1-based page), as JSON on stdout.

    python tests/documents/pdf_text.py FILE.pdf
"""
import json
import sys

from pypdf import PdfReader


def outline(reader, items, level, out):
    for item in items:
        if isinstance(item, list):
            outline(reader, item, level + 1, out)
            continue
        page = reader.get_destination_page_number(item)
        out.append({"level": level, "title": item.title, "page": page + 1 if page is not None else None})
    return out


reader = PdfReader(sys.argv[1])
print(json.dumps({
    "title": (reader.metadata or {}).get("/Title"),
    "pages": [page.extract_text() or "" for page in reader.pages],
    "outline": outline(reader, reader.outline, 0, []),
}))
