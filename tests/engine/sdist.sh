#!/usr/bin/env bash
# Fetches llama-cpp-python's sdist (which vendors llama.cpp's whole source, pinned by
# version and sha256) into CACHE_DIR once, and prints its path.
#
#   tests/engine/sdist.sh CACHE_DIR
set -euo pipefail

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache=${1:?cache dir}
sdist="$cache/llama_cpp_python-$VERSION.tar.gz"

mkdir -p "$cache"
if ! echo "$SHA256  $sdist" | sha256sum -c --status 2>/dev/null; then
    # The file itself, from PyPI's simple index: `pip download` of an sdist would first
    # build its build dependencies (ninja, cmake) from source only to read its metadata.
    python3 - "$VERSION" "$sdist" <<'PY'
import re, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=60).read().decode()
name = f"llama_cpp_python-{version}.tar.gz"
url = next(u for u in re.findall(r'href="([^"]+)"', index) if u.split("#")[0].endswith("/" + name))
with urllib.request.urlopen(url.split("#")[0], timeout=600) as response, open(dest + ".part", "wb") as out:
    while block := response.read(1 << 20):
        out.write(block)
PY
    mv "$sdist.part" "$sdist"
    echo "$SHA256  $sdist" | sha256sum -c --quiet >&2
fi
echo "$sdist"
