#!/usr/bin/env bash
# `make run`: ingest a real site, answer a sample question with citations, then start the
# API server on it and print the widget demo page's link and a curl command with a working
# key.
# Uses the Rust Book from the local toolchain docs (cited as https://doc.rust-lang.org/book/),
# or the bundled Zephyr Kettles help site when those docs are absent.
set -euo pipefail
bin=${1:-target/release/docent}
data=${DOCENT_DATA_DIR:-data}
bind=${DOCENT_BIND:-127.0.0.1:8080}
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

# A key kept (0600) in the data dir and reused while it is valid: demo_key FILE ARGS...
# (ARGS for `docent keys create`).
demo_key() {
  local file=$1 k=""
  shift
  if [[ -f "$file" ]]; then
    k=$(cat "$file")
    "$bin" --data-dir "$data" keys list --json |
      grep -q "\"id\":\"key_${k:8:8}\",[^}]*\"revoked\":null" || k=""
  fi
  if [[ -z "$k" ]]; then
    k=$("$bin" --data-dir "$data" keys create "$@" --json |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
    (umask 077 && echo "$k" > "$file")
  fi
  echo "$k"
}
# A secret key for curl, and the widget's public key for the demo page (this server's own
# origins only, so one per port).
key=$(demo_key "$data/demo-$bot.key" --bot "$bot" --name "make run demo")
port=${bind##*:}
pk=$(demo_key "$data/demo-$bot-$port.pk" --public --bot "$bot" --name "make run widget demo" \
  --origin "http://$bind" --origin "http://localhost:$port")
echo
echo "== starting docent serve on http://$bind (Ctrl-C stops it)."
echo
echo "The chat widget on a demo page: open http://$bind/demo?bot=$bot&token=$pk"
echo
echo "The operator console: open http://$bind/admin and, the first time, make the owner"
echo "account there with the admin key (serve writes it to $data/admin.key on its first start):"
echo "  cat $data/admin.key"
echo
echo "Or, from another terminal:"
echo
echo "curl -sN http://$bind/v1/chat -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' \\"
echo "  -d '{\"bot_id\": \"$bot\", \"message\": \"$question\", \"stream\": true}'"
echo
exec "$bin" --data-dir "$data" serve --bind "$bind"
