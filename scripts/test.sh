#!/usr/bin/env bash
# The one test command: installs the third-party tools the tests talk to (once, cached in the
# git-ignored .tools/), then checks formatting and lints and runs the whole suite.
#   scripts/test.sh            everything
#   scripts/test.sh -p NAME    only one package's tests (after the same checks)
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(./scripts/install-tools.sh)"

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test" >&2
if [ "$#" -gt 0 ]; then
  cargo test "$@"
else
  cargo test --workspace
fi
