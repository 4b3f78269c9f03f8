#!/usr/bin/env bash
# Real documents for the document-ingest tests, taken from Debian packages pinned by
# version and sha256 (downloaded once into CACHE_DIR with `apt-get download`, never
# committed), and written flat into OUT_DIR.
#
#   tests/documents/fetch.sh CACHE_DIR OUT_DIR
set -euo pipefail

cache=${1:?cache dir}
out=${2:?out dir}
# package version sha256-of-the-.deb path-inside name-in-OUT_DIR
DOCUMENTS=(
    "r-cran-officer 0.6.0+dfsg-1 3d6ec99aa9b4e414656b5389600871977dfe79dc4abd49ce11342f80aaffddcc ./usr/lib/R/site-library/officer/doc_examples/example.docx officer-example.docx"
    "previsat 3.5.1.7+dfsg1-5 e671af449bb7c3add1878c5d39b4b35ebd3a1f13d420c546f0ff7117b66cfba6 ./usr/share/Astropedia/PreviSat/doc/PreviSat_en.docx previsat-manual.docx"
    "python-cvxopt-doc 1.3.0+dfsg-1 609f44ca5057756c1892a37c2c0bb6aef91162749ae9998b09637033c22c3803 ./usr/share/doc/python-cvxopt-doc/CVXOPT.pdf cvxopt.pdf"
    "debian-history 2.28 ae364cdfd075bf6a08ca8f5105b44db7093e3b201c95d3b70a863b8849c6a082 ./usr/share/doc/debian-history/docs/project-history.en.pdf debian-history.pdf"
)

# Only what the list names: a file dropped from it would otherwise stay a page.
rm -rf "$out"
mkdir -p "$cache" "$out"
for entry in "${DOCUMENTS[@]}"; do
    read -r package version sha256 inside name <<<"$entry"
    deb=$(ls "$cache/${package}_${version//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ] || ! echo "$sha256  $deb" | sha256sum -c --status; then
        # apt-get download needs the package lists; a bare machine may have none yet.
        (cd "$cache" && apt-get download -q "$package=$version" >&2) || {
            if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2; fi
            (cd "$cache" && apt-get download -q "$package=$version" >&2)
        }
        deb=$(ls "$cache/${package}_${version//:/%3a}_"*.deb | head -1)
        echo "$sha256  $deb" | sha256sum -c --quiet >&2
    fi
    dpkg-deb --fsys-tarfile "$deb" | tar -x -O "$inside" > "$out/$name.part"
    mv "$out/$name.part" "$out/$name"
done
touch "$out/.fetched"
