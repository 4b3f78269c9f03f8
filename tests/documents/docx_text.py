"""What python-docx reads in a DOCX file, as JSON: an independent reading for the tests.

    python docx_text.py FILE.docx
"""
import json
import sys

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph


def blocks(parent):
    """The body's paragraphs and tables in document order."""
    for child in parent.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            yield Paragraph(child, parent)
        elif tag == "tbl":
            yield Table(child, parent)


def main(path):
    document = docx.Document(path)
    headings, texts, rows = [], [], []
    for block in blocks(document):
        if isinstance(block, Paragraph):
            text = " ".join(block.text.split())
            style = (block.style.name if block.style is not None else "") or ""
            if text and style.lower().startswith("heading"):
                headings.append(text)
            if text:
                texts.append(text)
        else:
            for row in block.rows:
                cells, previous = [], None
                for cell in row.cells:
                    # A cell spanning grid columns is listed once per column.
                    if cell._tc is previous:
                        continue
                    previous = cell._tc
                    text = " ".join(cell.text.split())
                    if text:
                        cells.append(text)
                if cells:
                    rows.append(cells)
                    texts.extend(cells)
    json.dump({"title": document.core_properties.title or "", "headings": headings,
               "texts": texts, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
