#!/usr/bin/env bash
# http_request benchmark: 1 000 000 records paged from a local JSON API by
# one Ferry step to Parquet (zstd) on file://, next to a plain Python
# `requests` loop over the same pages from the same server, in the same run.
# See README.md beside this script.
#
#   bash loadtests/http_request/run.sh
#   RECORDS=200000 PER_PAGE=500 RUNS=3 bash loadtests/http_request/run.sh
#
# The server is the `#[ignore]`d test `bench_http_server` of the same
# release binary, run in a process of its own (Rust, axum: it is not the
# bottleneck; its CPU seconds are shown for each run).
set -euo pipefail

cd "$(dirname "$0")/../.."
records="${RECORDS:-1000000}"
per_page="${PER_PAGE:-1000}"
runs="${RUNS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/ferry-target}"
venv="${FERRY_BENCH_VENV:-$HOME/.cache/ferry-bench-http-venv}"

echo "== Python venv with requests ($venv) ==" >&2
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import requests' 2>/dev/null \
    || "$venv/bin/pip" install --quiet 'requests>=2.31,<3'
py="$venv/bin/python"

echo "== building the benchmark (release) ==" >&2
bin="$(cargo test --release -p ferry-worker --lib --no-run 2>&1 \
    | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\)).*/\1/p' | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "could not find the ferry-worker unit test binary" >&2
    exit 1
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
work="$(mktemp -d)"
log="$work/bench.log"
FERRY_BENCH_RECORDS="$records" FERRY_BENCH_HTTP_PORT="$port" \
    "$bin" connectors::rest::step_tests::bench_http_server --exact --ignored >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
url="http://127.0.0.1:$port"

# The server's CPU seconds so far (user + system of every thread).
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / hz}' "/proc/$server/stat"
}
# measured <label> <command...>: runs the command, then logs the server's CPU
# seconds it caused as `SERVER label=… cpu=…`.
measured() {
    local label="$1" before after
    shift
    before="$(server_cpu)"
    "$@"
    after="$(server_cpu)"
    echo "SERVER label=$label cpu=$(echo "$after - $before" | bc -l)" >>"$log"
}
baseline() { # %e elapsed s, %U user s, %S system s, %M peak RSS KiB
    /usr/bin/time -f "PYPROC mode=$1 %e %U %S %M" "$py" loadtests/http_request/baseline.py \
        "$url" "$per_page" "$1" >>"$log" 2>&1
}
ferry() {
    FERRY_BENCH_HTTP_URL="$url" FERRY_BENCH_PER_PAGE="$per_page" \
        /usr/bin/time -f 'PROCESS %e %U %S %M' \
        "$bin" connectors::rest::step_tests::bench_http_request_export --exact --ignored --nocapture \
        2>&1 | grep -E '^(BENCH|PROCESS)' >>"$log"
}

echo "== $runs alternating runs of $records records, $per_page per page: requests (count), requests (collect), Ferry ==" >&2
for _ in $(seq "$runs"); do
    measured count baseline count
    measured collect baseline collect
    measured ferry ferry
done
grep -E '^(PYTHON|PYPROC|BENCH|PROCESS|SERVER)' "$log"

field() { # field <line> <key>: the value after "<key>="
    sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"
}
best() { # best <pattern>: the matching line with the fewest seconds
    grep -E "$1" "$log" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^seconds=/) {split($i, a, "="); print a[2], $0}}' \
        | sort -n | head -1 | cut -d' ' -f2-
}
cpu() { # cpu <pattern>: the least user + system CPU of the matching /usr/bin/time lines
    grep -E "$1" "$log" | awk '{printf "%.1f\n", $(NF-2) + $(NF-1)}' | sort -n | head -1
}
peak() { # peak <pattern>: the largest peak RSS (MiB) of the matching /usr/bin/time lines
    grep -E "$1" "$log" | awk '{printf "%.1f\n", $NF / 1024}' | sort -n | tail -1
}
server() { # server <label>: the least server CPU seconds of the runs of <label>
    grep "^SERVER label=$1 " "$log" | sed 's/.*cpu=//' | sort -n | head -1
}
count_line="$(best '^PYTHON mode=count ')"
collect_line="$(best '^PYTHON mode=collect ')"
ferry_line="$(best '^BENCH ')"

echo
echo "== side by side (best of $runs; $(field "$ferry_line" rows) records, $per_page per page) =="
printf '%-44s %8s %10s %12s %15s %11s\n' "client" "seconds" "rows / s" "client CPU s" "peak RSS (MiB)" "server CPU s"
printf '%-44s %8s %10s %12s %15s %11s\n' "requests loop, pages parsed and counted" \
    "$(field "$count_line" seconds)" "$(field "$count_line" rows_per_s)" \
    "$(cpu '^PYPROC mode=count ')" "$(peak '^PYPROC mode=count ')" "$(server count)"
printf '%-44s %8s %10s %12s %15s %11s\n' "requests loop, records kept in a list" \
    "$(field "$collect_line" seconds)" "$(field "$collect_line" rows_per_s)" \
    "$(cpu '^PYPROC mode=collect ')" "$(peak '^PYPROC mode=collect ')" "$(server collect)"
printf '%-44s %8s %10s %12s %15s %11s\n' "ferry step → Parquet zstd on file://" \
    "$(field "$ferry_line" seconds)" "$(field "$ferry_line" rows_per_s)" \
    "$(cpu '^PROCESS ')" "$(field "$ferry_line" peak_rss_mib) ($(peak '^PROCESS '))" "$(server ferry)"
printf 'ratio ferry rows/s ÷ requests (count) rows/s: %.2f×\n' \
    "$(echo "$(field "$count_line" seconds) / $(field "$ferry_line" seconds)" | bc -l)"
echo "details: $ferry_line"
