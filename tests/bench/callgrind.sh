#!/usr/bin/env bash
# Instructions the sidecar executes per request in one benchmark scenario, counted by callgrind.
# Wall-clock runs on a small shared VM vary by tens of percent; instruction counts repeat to a
# fraction of a percent, so compare builds with this. The harness runs twice with different
# request counts and the difference is divided by the difference in requests, so start-up,
# config loading and shutdown cancel out.
#
#   tests/bench/callgrind.sh SCENARIO [OUTRIGGER_BIN] [BENCH_BIN]
#
# SCENARIO: invoke-http, proxy-http or invoke-bolt. The binaries default to target/release/
# (build them first: cargo build --release -p outrigger-runtime -p outrigger-bench).
# Needs valgrind. Prints one line: SCENARIO instructions/request (requests counted).
set -euo pipefail
cd "$(dirname "$0")/../.."
scenario=${1:?usage: tests/bench/callgrind.sh SCENARIO [OUTRIGGER_BIN] [BENCH_BIN]}
sidecar=$(realpath "${2:-target/release/outrigger}")
bench=$(realpath "${3:-target/release/outrigger-bench}")
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
[ -x "$sidecar" ] && [ -x "$bench" ] || { echo "callgrind.sh: build $sidecar and $bench first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/wrap.sh" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file="$work/cg.\$\$.%p" "$sidecar" "\$@"
EOF
chmod +x "$work/wrap.sh"

# One run: the harness with a fixed request count per phase (one slow open-loop phase and one
# closed-loop phase at concurrency 1); prints "instructions requests".
run() {
  local n=$1 out="$work/run-$1"
  mkdir -p "$out"
  rm -f "$work"/cg.*
  "$bench" --no-build --sidecar-bin "$work/wrap.sh" --scenarios "$scenario" \
    --rates 100 --concurrency 1 --connections 4 --duration-secs 300 --max-requests "$n" \
    --json "$out/report.json" >"$out/stdout" 2>"$out/stderr" || {
    echo "callgrind.sh: the benchmark run failed; its output:" >&2
    cat "$out/stderr" >&2
    exit 1
  }
  local instructions
  instructions=$(cat "$work"/cg.* | awk '/^summary:/ {s += $2} END {print s + 0}')
  [ "$instructions" -gt 0 ] || { echo "callgrind.sh: no callgrind output" >&2; exit 1; }
  local requests
  requests=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
sc = [s for s in r["scenarios"] if s["scenario"] == sys.argv[2]][0]
print(sum(p["load"]["ok"] for p in sc["phases"]))' "$out/report.json" "$scenario")
  echo "$instructions $requests"
}

read -r i1 r1 < <(run 300)
read -r i2 r2 < <(run 1300)
python3 -c '
import sys
i1, r1, i2, r2 = map(int, sys.argv[2:6])
print(f"{sys.argv[1]} {(i2 - i1) / (r2 - r1):,.0f} instructions/request ({r2 - r1} requests counted)")' \
  "$scenario" "$i1" "$r1" "$i2" "$r2"
