#!/usr/bin/env bash
# The cluster suite: starts a real Kubernetes control plane and node with the kit
# (`cluster.sh up --node`), builds the operator and sidecar images from the binaries the build
# just made (`cluster.sh image`; the Dockerfiles are for users), runs every cluster test
# (`--include-ignored`) against it, and stops the cluster whatever happens.
#   scripts/cluster-suite.sh PATH/TO/cluster.sh [extra test-binary args, e.g. a test name]
# scripts/test.sh calls it after the rest of the suite; run alone it needs `cargo build` done.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=$1
shift
started=$(date +%s)
root=$PWD
# Where cargo puts the binaries: $CARGO_TARGET_DIR when set (relative to the workspace), else target/.
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
bins=$target/debug

# The same build as the suite's (a no-op after it): the binaries its integration tests ran.
echo "==> cluster suite: the binaries the images hold" >&2
cargo test --workspace --no-run

dir=$(mktemp -d /tmp/orc.XXXXXX)
work=$(mktemp -d)
down() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -f "$dir/env" ]; then
    echo "==> cluster suite failed (exit $rc): what the cluster looked like" >&2
    (
      # shellcheck disable=SC1091
      . "$dir/env"
      kubectl get pods -A -o wide >&2 || true
      kubectl -n outrigger-system logs -l app.kubernetes.io/component=operator --tail=80 \
        --prefix --all-containers >&2 || true
    )
  fi
  echo "==> cluster suite: stopping the cluster" >&2
  bash "$kit" down --dir "$dir" >&2 || echo "cluster-suite: \`cluster.sh down\` failed" >&2
  rm -rf "$work"
  exit "$rc"
}
trap down EXIT

echo "==> cluster suite: cluster.sh up --node (a real Kubernetes node)" >&2
# PodCertificateRequest (beta in 1.36, behind its gate): the identity signer's tests use it.
KUBE_APISERVER_EXTRA="${KUBE_APISERVER_EXTRA:---feature-gates=PodCertificateRequest=true --runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true}" \
KUBE_FEATURE_GATES="${KUBE_FEATURE_GATES:-PodCertificateRequest=true}" \
  bash "$kit" up --node --dir "$dir" >&2
# shellcheck disable=SC1091
. "$dir/env"

# Debug builds without their debug sections: the same code, a tenth of the bytes to import.
for bin in outrigger outrigger-operator; do
  objcopy --strip-debug "$bins/$bin" "$work/$bin"
done
bash "$kit" image test/outrigger:e2e --from-binary "$work/outrigger" --dir "$dir" >&2
bash "$kit" image test/outrigger-operator:e2e --from-binary "$work/outrigger-operator" --dir "$dir" >&2
export OUTRIGGER_E2E_SIDECAR_IMAGE=test/outrigger:e2e
export OUTRIGGER_E2E_OPERATOR_IMAGE=test/outrigger-operator:e2e

# The cluster test binaries (test targets named e2e*) of the build above, run directly: a
# narrower `cargo test` would resolve other features and compile again.
mapfile -t suites < <(cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and t.get("name", "").startswith("e2e") and m.get("executable"):
        print(os.path.dirname(m["manifest_path"]) + "\t" + m["executable"])
')
[ "${#suites[@]}" -gt 0 ] || { echo "cluster-suite: found no e2e test binary" >&2; exit 1; }
for suite in "${suites[@]}"; do
  pkg=${suite%%$'\t'*} bin=${suite#*$'\t'}
  echo "==> cluster suite: $(basename "$bin") --include-ignored" >&2
  (cd "$pkg" && "$bin" --include-ignored --test-threads=1 --nocapture "$@")
done
echo "==> cluster suite: done in $(( $(date +%s) - started )) s (cluster up, images, tests)" >&2
