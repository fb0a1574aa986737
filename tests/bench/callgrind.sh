#!/usr/bin/env bash
# Instructions the sidecar executes per request in one benchmark scenario, counted by callgrind.
# Wall-clock runs on a small shared VM vary by tens of percent; instruction counts repeat to a
# fraction of a percent, so compare builds with this. The harness runs twice with different
# request counts and the difference is divided by the difference in requests, so start-up,
# config loading and shutdown cancel out.
#
#   tests/bench/callgrind.sh [--tracing RATIO] SCENARIO [OUTRIGGER_BIN] [BENCH_BIN]
#
# SCENARIO: invoke-http, proxy-http or invoke-bolt. The binaries default to target/release/
# (build them first: cargo build --release -p outrigger-runtime -p outrigger-bench).
# --tracing RATIO turns span export on (`tracing: {samplingRatio: RATIO, otlp: ...}`) to a
# local OTLP/HTTP sink that answers every export with 200; the bench's requests carry no
# traceparent, so RATIO is the share of calls sampled.
# CALLGRIND_KEEP=DIR keeps each run's profiles in DIR/run-N (read them with callgrind_annotate).
# Needs valgrind. Prints one line: SCENARIO instructions/request (requests counted).
set -euo pipefail
cd "$(dirname "$0")/../.."
ratio=
if [ "${1:-}" = --tracing ]; then
  ratio=${2:?--tracing needs a sampling ratio}
  shift 2
fi
scenario=${1:?usage: tests/bench/callgrind.sh [--tracing RATIO] SCENARIO [OUTRIGGER_BIN] [BENCH_BIN]}
sidecar=$(realpath "${2:-target/release/outrigger}")
bench=$(realpath "${3:-target/release/outrigger-bench}")
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
[ -x "$sidecar" ] && [ -x "$bench" ] || { echo "callgrind.sh: build $sidecar and $bench first" >&2; exit 1; }

work=$(mktemp -d)
sink_pid=
trap 'rm -rf "$work"; [ -z "$sink_pid" ] || kill "$sink_pid" 2>/dev/null' EXIT
extra=
if [ -n "$ratio" ]; then
  python3 - "$work/sink.port" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
open(sys.argv[1], "w").write(str(server.server_port))
server.serve_forever()
PY
  sink_pid=$!
  for _ in $(seq 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
  extra="tracing: {samplingRatio: $ratio, otlp: {endpoint: \"http://127.0.0.1:$(cat "$work/sink.port")\", protocol: http/protobuf}}"
fi
# The wrapper appends the tracing settings (if any) to the config the harness generated.
printf '%s\n' "$extra" > "$work/extra.yaml"
cat > "$work/wrap.sh" <<EOF
#!/usr/bin/env bash
args=("\$@")
for ((i = 0; i < \${#args[@]}; i++)); do
  if [ "\${args[\$i]}" = --config ]; then
    cat "$work/extra.yaml" >> "\${args[\$((i + 1))]}"
  fi
done
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
  # CALLGRIND_KEEP=DIR keeps the profiles, for callgrind_annotate.
  if [ -n "${CALLGRIND_KEEP:-}" ]; then
    mkdir -p "$CALLGRIND_KEEP/run-$n" && cp "$work"/cg.* "$CALLGRIND_KEEP/run-$n/"
  fi
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
