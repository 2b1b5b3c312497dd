#!/bin/sh
# Tries the edge twin on wasmCloud with wash 0.43 (README, "wasmCloud"): installs wash into the
# cache if missing, starts a local lattice (`wash up`), deploys wadm.yaml and fetches the page.
# On 2026-11-29 this could not run here: `wash up` downloads nats-server, wadm and the wasmCloud
# host from GitHub releases, and wadm.yaml's HTTP server provider is an image on ghcr.io; this
# machine reaches only package registries. Not part of CI (wash is ~850 crates to build).
set -eu
cd "$(dirname "$0")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tls-site-ci/wash"
if [ ! -x "$cache/bin/wash" ]; then
  # A target directory of its own, so the install neither waits for nor evicts the project's.
  cargo install --root "$cache" --target-dir "$cache/build" wash@0.43.0 --locked
fi
wash="$cache/bin/wash"
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
