#!/bin/sh
# Tries the edge twin on wasmCloud with wash 0.43 (docs/edge.md, "wasmCloud"): installs wash into the
# cache if missing, starts a local lattice (`wash up`), deploys wadm.yaml and fetches the page.
# Not run to the end on 2026-11-29 (wash not built; judged from its source): `wash up` downloads
# nats-server, wadm and the wasmCloud host from GitHub releases, and wadm.yaml's HTTP server
# provider is an image on ghcr.io, while this project's machines reach only package registries.
# Not part of CI: wash is ~850 crates to build.
set -eu
cd "$(dirname "$0")"
wash=$(./cached-install.sh wash wash@0.43.0)
"$wash" --version
# The component wadm.yaml names (file://, relative to this folder): build it first.
[ -f ../../target/guest/wasm32-wasip2/release/tls_site_edge.wasm ] || { echo "cargo build --release -p tls-site first" >&2; exit 1; }
"$wash" up --detached
trap '"$wash" down --all' EXIT
"$wash" app deploy wadm.yaml
# The provider listens on 8080 (wadm.yaml); give the lattice a moment to start it.
for attempt in $(seq 60); do
  if curl -sf -H 'Host: sandbox.tls-site.localhost' http://127.0.0.1:8080/ -o /dev/null; then break; fi
  sleep 1
done
curl -sf -H 'Host: sandbox.tls-site.localhost' http://127.0.0.1:8080/ | sha256sum
