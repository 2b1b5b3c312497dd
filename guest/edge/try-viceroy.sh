#!/bin/sh
# Tries the edge twin under Fastly's local runtime, Viceroy 0.22 (docs/edge.md, "Fastly Compute"):
# installs it into the cache if missing, serves the component as it is and fetches a page.
# On 2026-11-29 Viceroy refused it (it runs only components of Fastly's own world,
# fastly:compute/service): "component imports instance `wasi:http/types@0.2.12`, but a matching
# implementation was not found in the linker"; with `--unknown-import-behavior trap`, "no
# exported instance named `fastly:compute/http-incoming@0.1.0`". Not part of CI: the install
# takes 37 minutes on two shared cores, for that answer.
set -eu
cd "$(dirname "$0")"
viceroy=$(./cached-install.sh viceroy viceroy@0.22.0)
"$viceroy" --version
component="${TLS_SITE_EDGE_COMPONENT:-../../target/guest/wasm32-wasip2/release/tls_site_edge.wasm}"
[ -f "$component" ] || { echo "no $component: cargo build --release -p tls-site first" >&2; exit 1; }
"$viceroy" serve --addr 127.0.0.1:7676 "$component" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for attempt in $(seq 60); do
  # Viceroy exits at once when it refuses the component: its error above is the answer.
  kill -0 $server 2>/dev/null || { wait $server || true; echo "viceroy refused the component" >&2; exit 1; }
  if curl -sf -H 'Host: sandbox.tls-site.localhost' http://127.0.0.1:7676/ -o /dev/null; then break; fi
  sleep 1
done
curl -sf -H 'Host: sandbox.tls-site.localhost' http://127.0.0.1:7676/ | sha256sum
