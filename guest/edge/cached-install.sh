#!/bin/sh
# `cached-install.sh NAME CRATE@VERSION`: prints the path of a cargo-installed program, building it
# first into tls-site-ci's cache (outside the checkout, kept between runs) if it is not there.
set -eu
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tls-site-ci/$1"
if [ ! -x "$cache/bin/$1" ]; then
  # A target directory of its own, so the install neither waits for nor evicts the project's.
  cargo install --root "$cache" --target-dir "$cache/build" "$2" --locked >&2
fi
echo "$cache/bin/$1"
