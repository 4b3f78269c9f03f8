#!/usr/bin/env bash
# Builds llama.cpp's own tools from the llama.cpp source that llama-cpp-python's sdist on
# PyPI vendors, pinned by version and sha256: the OpenAI-compatible server (`llama-server`)
# for the remote-engine tests and benchmarks, and `llama-bench`, the reference for
# `docent bench`'s in-process generation. Release build as llama.cpp makes it (OpenMP on),
# static libraries, no TLS, no web UI.
#
#   tests/engine/build.sh CACHE_DIR OUT_DIR [TARGET...]   (default target: llama-server)
#
# The sdist is downloaded into CACHE_DIR once; OUT_DIR/bin/TARGET is the result (the
# Makefile skips this script when it exists).
set -euo pipefail

cache=${1:?cache dir}
out=${2:?output dir}
shift 2
targets=("${@:-llama-server}")
sdist=$("$(dirname "$0")/sdist.sh" "$cache")

mkdir -p "$out"
work="$out/src"
rm -rf "$work" && mkdir -p "$work"
tar -xzf "$sdist" -C "$work" --strip-components=1
src="$work/vendor/llama.cpp"

# The same CPU features the in-process build enables (Makefile: GGML_*), passed through.
ggml=()
for v in GGML_AVX512 GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AVX512_VBMI GGML_AVX_VNNI \
    GGML_AMX_TILE GGML_AMX_INT8 GGML_AMX_BF16; do
    [[ -n ${!v:-} ]] && ggml+=("-D$v=${!v}")
done

cmake -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF "${ggml[@]}" >"$out/cmake.log"
cmake --build "$out/build" --target "${targets[@]}" -j "$(nproc)" >>"$out/cmake.log"
mkdir -p "$out/bin"
for target in "${targets[@]}"; do
    cp "$out/build/bin/$target" "$out/bin/$target"
    echo "built $out/bin/$target"
done
rm -rf "$work"
