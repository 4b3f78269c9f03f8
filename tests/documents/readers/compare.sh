#!/usr/bin/env bash
# The PDF reader comparison behind docent's choice of pdf_oxide (README "Documents"):
# fetches the corpus (corpus.txt, pinned by sha256) into OUT/pdfs, builds the candidates
# into OUT/target, and scores each on each file against poppler's pdftotext.
#
#   tests/documents/readers/compare.sh CACHE_DIR OUT_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:?cache dir}
out=${2:?out dir}
mkdir -p "$cache" "$out/pdfs"
command -v pdftotext >/dev/null || {
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q poppler-utils >&2; else sudo apt-get install -y -q poppler-utils >&2; fi
}
while read -r source package version sha256 inside name; do
    case "$source" in ''|'#'*) continue ;; esac
    [ -s "$out/pdfs/$name" ] && continue
    if [ "$source" = deb ]; then
        file=$(ls "$cache/${package}_${version//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
        if [ -z "$file" ]; then
            (cd "$cache" && apt-get download -q "$package=$version" >&2)
            file=$(ls "$cache/${package}_${version//:/%3a}_"*.deb | head -1)
        fi
    else
        file="$cache/$package-$version.tar.gz"
        # The sdist itself, from PyPI's simple index (pip would build it to read its
        # metadata).
        [ -s "$file" ] || python3 - "$package" "$version" "$file" <<'PY'
import re, sys, urllib.request
package, version, file = sys.argv[1:]
with urllib.request.urlopen(f"https://pypi.org/simple/{package}/") as r:
    page = r.read().decode()
name = re.escape(f"{package}-{version}.tar.gz")
url = re.search(r'href="([^"#]+/' + name + r')[#"]', page).group(1)
urllib.request.urlretrieve(url, file)
PY
    fi
    echo "$sha256  $file" | sha256sum -c --quiet >&2
    if [ "$source" = deb ]; then
        dpkg-deb --fsys-tarfile "$file" | tar -x -O "$inside" > "$out/pdfs/$name.part"
    else
        tar -x -z -O -f "$file" "$inside" > "$out/pdfs/$name.part"
    fi
    # Debian compresses large documentation: the PDF is what is inside.
    if [[ "$inside" == *.gz ]]; then gzip -dc "$out/pdfs/$name.part" > "$out/pdfs/$name"; rm "$out/pdfs/$name.part";
    else mv "$out/pdfs/$name.part" "$out/pdfs/$name"; fi
done < "$here/corpus.txt"
CARGO_TARGET_DIR="$out/target" cargo build -q --release --manifest-path "$here/Cargo.toml"
python3 "$here/compare.py" "$out/target/release/pdf-readers" "$out/pdfs" "$out/results"
