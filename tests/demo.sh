#!/usr/bin/env bash
# `make run`: ingest a real site and answer a sample question about it, with citations.
# Uses the Rust Book from the local toolchain docs (cited as https://doc.rust-lang.org/book/),
# or the bundled Zephyr Kettles help site when those docs are absent.
set -euo pipefail
bin=${1:-target/release/docent}
data=${DOCENT_DATA_DIR:-data}
book="$(dirname "$(rustup doc --path 2>/dev/null || echo /nonexistent/x)")/book"
if [[ -f "$book/ch00-00-introduction.html" ]]; then
  echo "== ingesting the Rust Book from $book"
  "$bin" --data-dir "$data" ingest "$book" --bot rust-book --name "The Rust Book" \
    --base-url https://doc.rust-lang.org/book/
  bot=rust-book
  question=${DEMO_QUESTION:-"What does the ? operator do in Rust?"}
else
  echo "== Rust Book docs not found; ingesting the bundled demo site"
  "$bin" --data-dir "$data" ingest tests/fixtures/site --bot zephyr --name "Zephyr Kettles" \
    --base-url https://help.zephyr-kettles.example/
  bot=zephyr
  question=${DEMO_QUESTION:-"How long does international shipping take?"}
fi
echo
echo "== docent ask --bot $bot \"$question\""
"$bin" --data-dir "$data" ask --bot "$bot" "$question"
