#!/usr/bin/env bash
# The one test command: installs the third-party tools the tests talk to (once, cached in the
# git-ignored .tools/), then checks formatting and lints and runs the whole suite, the cluster
# tests on a real Kubernetes node included when the kit is there (scripts/cluster-suite.sh).
#   scripts/test.sh            everything
#   scripts/test.sh -p NAME    only one package's tests (after the same checks)
set -euo pipefail
cd "$(dirname "$0")/.."

# The installer prints one `export` line; a failed install stops here with its own error above,
# rather than running the tests without their tools.
echo "==> scripts/install-tools.sh" >&2
exports=$(./scripts/install-tools.sh) || {
  echo "test.sh: installing the test tools failed (scripts/install-tools.sh, error above); not running the tests" >&2
  exit 1
}
case "$exports" in
  "export PATH="*) ;;
  *)
    echo "test.sh: scripts/install-tools.sh printed no export line (got: ${exports:-nothing}); not running the tests" >&2
    exit 1
    ;;
esac
eval "$exports"
for bin in grpcurl kubernetes-validate helm kubectl; do
  command -v "$bin" >/dev/null 2>&1 || {
    echo "test.sh: $bin is not on PATH after scripts/install-tools.sh; not running the tests" >&2
    exit 1
  }
done

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test" >&2
if [ "$#" -gt 0 ]; then
  cargo test "$@"
  exit 0
fi
cargo test --workspace

# The cluster suite (operator/tests/e2e.rs): the operator and the sidecar in real pods on a real
# Kubernetes node from the kit beside this repo (../shared/kube, or OUTRIGGER_KUBE_KIT: the kit's
# folder or its cluster.sh). Without the kit those tests stay listed as ignored, with the reason.
kit=${OUTRIGGER_KUBE_KIT:-../shared/kube}
[ -d "$kit" ] && kit="$kit/cluster.sh"
if [ ! -f "$kit" ]; then
  echo "==> no Kubernetes test kit at $kit: the cluster tests were listed as ignored above" >&2
  exit 0
fi
exec ./scripts/cluster-suite.sh "$kit"
