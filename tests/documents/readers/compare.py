"""Runs each candidate PDF reader on each corpus PDF in its own process (time and memory
limits), and scores its words against poppler's pdftotext (bag-of-words recall and
precision): one JSON line per file and candidate, then a summary per candidate.

    compare.py READERS_BINARY PDF_DIR OUT_DIR
"""
import collections, json, os, re, resource, subprocess, sys, time

CORPUS = sys.argv[2]
BIN = sys.argv[1]
OUT = sys.argv[3]
CANDS = ["pdf-extract", "unpdf", "pdf_oxide"]
WORD = re.compile(r"\w{2,}", re.UNICODE)

def words(text):
    return collections.Counter(w.lower() for w in WORD.findall(text))

def reference(pdf):
    path = os.path.join(OUT, "ref", os.path.basename(pdf) + ".txt")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run(["pdftotext", "-enc", "UTF-8", pdf, path], check=False)
    return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""

def limit():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

def run(cand, pdf):
    out = os.path.join(OUT, cand, os.path.basename(pdf) + ".txt")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if os.path.exists(out):
        os.remove(out)
    start = time.time()
    p = subprocess.Popen([BIN, cand, pdf, out], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, preexec_fn=limit)
    try:
        _, err = p.communicate(timeout=120)
        if p.returncode == 0:
            status = "ok"
        elif b"panicked at src/main.rs" in err:
            status = "error"  # the reader refused the file
        elif b"panicked" in err:
            status = "panic"  # the reader itself crashed
        else:
            status = f"rc{p.returncode}"
    except subprocess.TimeoutExpired:
        p.kill(); p.communicate(); status, err = "timeout", b""
    secs = time.time() - start
    text = open(out, encoding="utf-8", errors="replace").read() if os.path.exists(out) else ""
    return status, secs, text, err.decode(errors="replace")[-300:]

rows = []
for name in sorted(os.listdir(CORPUS)):
    pdf = os.path.join(CORPUS, name)
    ref = words(reference(pdf))
    total = sum(ref.values())
    for cand in CANDS:
        status, secs, text, err = run(cand, pdf)
        got = words(text)
        common = sum((ref & got).values())
        row = {"file": name, "cand": cand, "status": status, "secs": round(secs, 2),
               "ref_words": total, "recall": round(common / total, 3) if total else None,
               "precision": round(common / max(1, sum(got.values())), 3),
               "pages": text.count("\f") + 1 if text else 0, "err": err if status != "ok" else ""}
        rows.append(row)
        print(json.dumps(row), flush=True)
json.dump(rows, open(os.path.join(OUT, "results.json"), "w"), indent=1)
for cand in CANDS:
    mine = [r for r in rows if r["cand"] == cand]
    scored = [r for r in mine if r["ref_words"]]
    ref = sum(r["ref_words"] for r in scored)
    found = sum((r["recall"] or 0) * r["ref_words"] for r in scored)
    statuses = collections.Counter(r["status"] for r in mine)
    print(f"{cand}: {len(mine)} files {dict(statuses)}, words recovered {found / ref:.4f} "
          f"of pdftotext's, {sum(r['secs'] for r in mine):.1f} s in all")
