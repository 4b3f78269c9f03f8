"""Writes the small hand-made PDFs the document tests use (committed; rerun to remake):
refund-policy.pdf, three pages with an outline whose second entry starts mid-page, and
scan.pdf, a page holding only an image (no text layer). Plain PDF objects, standard
Helvetica, no dependencies.

    python3 tests/documents/make_pdfs.py tests/fixtures/documents
"""
import sys, zlib


def pdf(objects):
    """A PDF file of the numbered objects (1-based, object 1 the catalog)."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, len(objects), xref)
    return bytes(out)


def stream(data, extra=b""):
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def text_page(lines):
    ops = [b"BT /F1 12 Tf 72 720 Td 16 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(b"(" + escaped.encode("latin-1") + b") '")
    ops.append(b"ET")
    return b"\n".join(ops)


def refund_policy():
    pages = [
        ["Acme Refund Policy", "This policy explains refunds and returns at Acme.",
         "It applies to every order placed in our web shop."],
        ["Refunds", "We refund the full price within 30 days of delivery.",
         "Refunds reach the original payment card within 5 business days.",
         "Returns", "Send the parcel back with the prepaid label in the box."],
        ["Contact", "Write to refunds@acme.example for anything else.",
         "The warehouse is open Monday to Friday."],
    ]
    # 1 catalog, 2 pages, 3 font, 4-6 page objects, 7-9 contents, 10 outlines,
    # 11-14 outline items, 15 info.
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Outlines 10 0 R /PageMode /UseOutlines >>",
        b"<< /Type /Pages /Kids [4 0 R 5 0 R 6 0 R] /Count 3 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i in range(3):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (7 + i))
    for lines in pages:
        objects.append(stream(text_page(lines)))
    objects.append(b"<< /Type /Outlines /First 11 0 R /Last 11 0 R /Count 4 >>")
    # The policy (page 1) holds Refunds and Returns (both page 2) and Contact (page 3).
    objects.append(b"<< /Title (Acme Refund Policy) /Parent 10 0 R /First 12 0 R /Last 14 0 R "
                   b"/Count 3 /Dest [4 0 R /XYZ 0 792 0] >>")
    objects.append(b"<< /Title (Refunds) /Parent 11 0 R /Next 13 0 R /Dest [5 0 R /XYZ 0 792 0] >>")
    objects.append(b"<< /Title (Returns) /Parent 11 0 R /Prev 12 0 R /Next 14 0 R "
                   b"/Dest [5 0 R /XYZ 0 700 0] >>")
    objects.append(b"<< /Title (Contact) /Parent 11 0 R /Prev 13 0 R /Dest [6 0 R /XYZ 0 792 0] >>")
    # The title as UTF-16 (what most producers write), with a letter outside Latin-1.
    title = ("\ufeff" + "Acme Refunds \u2013 Policy").encode("utf-16-be").hex().upper().encode()
    objects.append(b"<< /Title <" + title + b"> /Producer (make_pdfs.py) >>")
    return pdf(objects)


def scan():
    # A gray 8x8 image filling the page, no font, no text.
    pixels = zlib.compress(bytes(range(64)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /Im1 4 0 R >> >> /Contents 5 0 R >>",
        stream(pixels, b"/Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceGray "
               b"/BitsPerComponent 8 /Filter /FlateDecode "),
        stream(b"q 612 0 0 792 0 0 cm /Im1 Do Q"),
        b"<< /Producer (make_pdfs.py) >>",
    ]
    return pdf(objects)


if __name__ == "__main__":
    out = sys.argv[1]
    open(f"{out}/refund-policy.pdf", "wb").write(refund_policy())
    open(f"{out}/scan.pdf", "wb").write(scan())
