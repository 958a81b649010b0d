#!/usr/bin/env bash
# mongo_query benchmark: 1 000 000 documents of `bench.orders` exported by
# one Ferry step to Parquet (zstd) on file://, next to a plain pymongo loop
# reading the same collection from the same server, in the same run. See
# README.md beside this script.
#
#   bash loadtests/mongo_query/run.sh
#   DOCS=200000 RUNS=2 bash loadtests/mongo_query/run.sh
#
# The server is nx-27017 (the MongoDB wire-protocol peer the tests use,
# installed by scripts/test-peers.sh), started here in memory on a free port.
set -euo pipefail

cd "$(dirname "$0")/../.."
docs="${DOCS:-1000000}"
runs="${RUNS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/ferry-target}"

venv="$(bash scripts/test-peers.sh | tail -1)"
py="$venv/bin/python"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
work="$(mktemp -d)"
log="$work/bench.log"
"$venv/bin/nx-27017" --db memory --host 127.0.0.1 --port "$port" \
    --log-file "$work/nx.log" --pid-file "$work/nx.pid" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done

echo "== loading $docs documents into nx-27017 on port $port ==" >&2
loaded_at=$(date +%s)
"$py" loadtests/mongo_query/load.py "$port" "$docs"
echo "loaded in $(( $(date +%s) - loaded_at )) s" >&2

echo "== building the benchmark (release) ==" >&2
bin="$(cargo test --release -p ferry-worker --lib --no-run 2>&1 \
    | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\)).*/\1/p' | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "could not find the ferry-worker unit test binary" >&2
    exit 1
fi

baseline() {
    # %e elapsed s, %U user s, %S system s, %M peak RSS KiB (the Python process)
    /usr/bin/time -f 'PYPROC %e %U %S %M' "$py" loadtests/mongo_query/baseline.py "$port" >>"$log" 2>&1
}
ferry() {
    FERRY_BENCH_MONGO_PORT="$port" /usr/bin/time -f 'PROCESS %e %U %S %M' \
        "$bin" connectors::mongodb::step_tests::bench_mongo_query_export --exact --ignored --nocapture \
        2>&1 | grep -E '^(BENCH|PROCESS)' >>"$log"
}

echo "== $runs alternating runs: pymongo baseline, then Ferry ==" >&2
for _ in $(seq "$runs"); do
    baseline
    ferry
done
grep -E '^(PYMONGO|PYPROC|BENCH|PROCESS)' "$log"

field() { # field <line> <key>: the value after "<key>="
    sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"
}
best() { # best <prefix>: the line with the fewest seconds
    grep "^$1" "$log" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^seconds=/) {split($i, a, "="); print a[2], $0}}' \
        | sort -n | head -1 | cut -d' ' -f2-
}
py_line="$(best PYMONGO)"
ferry_line="$(best BENCH)"
py_seconds="$(field "$py_line" seconds)"
ferry_seconds="$(field "$ferry_line" seconds)"
py_cpu="$(awk '/^PYPROC/ {printf "%.1f\n", $3 + $4}' "$log" | sort -n | head -1)"
ferry_cpu="$(awk '/^PROCESS/ {printf "%.1f\n", $3 + $4}' "$log" | sort -n | head -1)"
py_peak="$(awk '/^PYPROC/ {printf "%.1f\n", $5 / 1024}' "$log" | sort -n | tail -1)"
ferry_peak="$(field "$ferry_line" peak_rss_mib)"
process_peak="$(awk '/^PROCESS/ {printf "%.1f\n", $5 / 1024}' "$log" | sort -n | tail -1)"

echo
echo "== side by side (best of $runs; $(field "$ferry_line" rows) documents) =="
printf '%-40s %9s %12s %14s %18s\n' "client" "seconds" "rows / s" "client CPU (s)" "peak RSS (MiB)"
printf '%-40s %9s %12s %14s %18s\n' "pymongo loop (documents decoded)" "$py_seconds" \
    "$(field "$py_line" rows_per_s)" "$py_cpu" "$py_peak"
printf '%-40s %9s %12s %14s %18s\n' "ferry step → Parquet zstd on file://" "$ferry_seconds" \
    "$(field "$ferry_line" rows_per_s)" "$ferry_cpu" "$ferry_peak (process $process_peak)"
printf 'ratio ferry rows/s ÷ pymongo rows/s: %.2f×\n' "$(echo "$py_seconds / $ferry_seconds" | bc -l)"
echo "details: $ferry_line"
