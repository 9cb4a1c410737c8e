#!/usr/bin/env bash
# The bundle builds Kubernetes, etcd and crictl from the Go module proxy and needs Go >= 1.25.
# Debian bookworm's golang is older; say how to get one and stop before anything is half done.
set -euo pipefail
need_major=1 need_minor=25
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go >= ${need_major}.${need_minor} is needed to build the bundle, and 'go' is not on PATH." >&2
  echo "  fix: install Go ${need_major}.${need_minor} or newer (https://go.dev/doc/install, or Debian's golang-1.2x" >&2
  echo "       from trixie/backports), put its bin/ on PATH, then run make again." >&2
  exit 1
fi
version=$(go env GOVERSION | sed 's/^go//')
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
if (( major < need_major || (major == need_major && minor < need_minor) )); then
  echo "error: Go $version is too old to build the bundle (needs >= ${need_major}.${need_minor})." >&2
  echo "  fix: install a newer Go (https://go.dev/doc/install, or trixie's golang), put it first on PATH." >&2
  exit 1
fi
