#!/bin/sh
# Serves the edge twin on wasmCloud's runtime library (crates.io wash-runtime 0.1.0, through this
# folder's small program) and fetches every page with a deadline (docs/edge.md, "wasmCloud").
# On 2026-11-29: the 2854-byte page came back right; each 30 KB PDF hung until the deadline:
# wash-runtime awaits the component's `handle` before it sends the response, while the component
# streams the body after setting the response, as wasi:http intends, so a body larger than the
# pipe's buffer waits for a reader that never comes. Not part of CI for that reason.
set -eu
cd "$(dirname "$0")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tls-site-ci/wasmcloud"
# Eleven minutes the first time on two shared cores; seconds when nothing changed.
cargo install --quiet --locked --root "$cache" --target-dir "$cache/build" --path .
component="${TLS_SITE_EDGE_COMPONENT:-../../../target/guest/wasm32-wasip2/release/tls_site_edge.wasm}"
[ -f "$component" ] || { echo "no $component: cargo build --release -p tls-site first" >&2; exit 1; }
"$cache/bin/tls-site-wasmcloud" --addr 127.0.0.1:7677 "$component" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 5
body=$(mktemp)
trap 'kill $server 2>/dev/null; rm -f "$body"' EXIT
failed=0
for host in tls-site.localhost sandbox.tls-site.localhost prebuilt.tls-site.localhost; do
  if curl -sf --max-time 10 -H "Host: $host" http://127.0.0.1:7677/ -o "$body"; then
    echo "$host: $(sha256sum < "$body")"
  else
    echo "$host: no response within 10 s" >&2
    failed=1
  fi
done
exit $failed
