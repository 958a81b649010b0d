#!/usr/bin/env bash
# Transform benchmark: two 5 000 000-row step results (Parquet written by
# Ferry's sink, as steps write them) joined by a Ferry transform, next to
# DuckDB running the same join over the same files, in the same run on the
# same machine. Both write the joined rows as zstd Parquet. See README.md.
#
#   bash loadtests/transform/run.sh
#   RUNS=3 bash loadtests/transform/run.sh
#   FERRY_BENCH_ROWS=1000000 bash loadtests/transform/run.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
runs="${RUNS:-2}"
rows="${FERRY_BENCH_ROWS:-5000000}"
dir="${FERRY_BENCH_DIR:-${TMPDIR:-/tmp}/ferry-transform-bench}"
venv="${FERRY_BENCH_VENV:-${TMPDIR:-/tmp}/ferry-transform-bench-venv}"
export FERRY_BENCH_DIR="$dir" FERRY_BENCH_ROWS="$rows"
mkdir -p "$dir"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
    echo "== installing duckdb into $venv ==" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet duckdb
fi

echo "== building the benchmark (release) =="
bin="$(cargo test --release -p ferry-worker --test worker --no-run 2>&1 \
    | sed -n 's/.*Executable .*(\(.*\/worker-[0-9a-f]*\)).*/\1/p' | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "could not find the worker test binary" >&2
    exit 1
fi

orders="$dir/objects/results/exec_bench/step_orders.parquet"
payments="$dir/objects/results/exec_bench/step_payments.parquet"
stamp="$dir/inputs-$rows"
if [ ! -f "$stamp" ] || [ ! -f "$orders" ] || [ ! -f "$payments" ]; then
    echo "== writing the inputs: 2 × $rows rows through the Parquet sink ==" >&2
    rm -f "$dir"/inputs-*
    "$bin" transform_bench::bench_transform_inputs --exact --ignored --nocapture | grep '^INPUTS'
    touch "$stamp"
fi
ls -l "$orders" "$payments"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
duckdb() { # duckdb <label> <memory limit or "">
    /usr/bin/time -f "PROCESS $1 %e %M" "$venv/bin/python" - "$orders" "$payments" "$dir/duckdb.parquet" "$2" \
        <<'PY' 2>&1 | grep -E '^(DUCK|PROCESS)' | sed "s/^DUCK/DUCK $1/" >>"$log"
import sys, time, duckdb
orders, payments, out, limit = sys.argv[1:5]
con = duckdb.connect()
con.execute("SET threads = 2")
if limit:
    con.execute(f"SET memory_limit = '{limit}'")
query = ("SELECT o.order_id, o.status, o.amount, p.method, p.paid_cents, p.paid_at "
         f"FROM read_parquet('{orders}') o JOIN read_parquet('{payments}') p ON p.order_id = o.order_id")
started = time.monotonic()
con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
seconds = time.monotonic() - started
n = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
print(f"DUCK rows={n} seconds={seconds:.3f} rows_per_s={n / seconds:.0f}")
PY
}
ferry() { # ferry <label> [VAR=value …]
    local label="$1"
    shift
    env "$@" /usr/bin/time -f "PROCESS $label %e %M" \
        "$bin" transform_bench::bench_transform_join --exact --ignored --nocapture 2>&1 \
        | grep -E '^(BENCH|PROCESS)' | sed "s/^BENCH/BENCH $label/" >>"$log"
}

echo "== $runs alternating runs =="
for _ in $(seq "$runs"); do
    duckdb duckdb ""
    duckdb duckdb-1GB 1GB
    ferry ferry-hash FERRY_TRANSFORM_HASH_JOIN=true
    ferry ferry-sort-merge FERRY_TRANSFORM_HASH_JOIN=false
    ferry ferry-256MiB FERRY_TRANSFORM_HASH_JOIN=true FERRY_TRANSFORM_MEMORY=256MiB
done
cat "$log"

best() { # best <label>: the fastest run's seconds
    grep -E "^(DUCK|BENCH) $1 " "$log" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' | sort -n | head -1
}
peak() { # peak <label>: the largest process peak RSS in MiB (/usr/bin/time)
    awk -v l="$1" '$1 == "PROCESS" && $2 == l {printf "%.0f\n", $4 / 1024}' "$log" | sort -n | tail -1
}
echo
echo "== side by side (best of $runs; $rows ⋈ $rows rows → $rows rows written as zstd Parquet) =="
printf '%-52s %9s %12s %15s\n' "system" "seconds" "rows / s" "peak RSS (MiB)"
for label in duckdb duckdb-1GB ferry-hash ferry-sort-merge ferry-256MiB; do
    seconds="$(best "$label")"
    [ -n "$seconds" ] || { printf '%-52s %9s\n' "$label" "failed"; continue; }
    case "$label" in
        duckdb) what="DuckDB $("$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)'), 2 threads, default memory" ;;
        duckdb-1GB) what="DuckDB, 2 threads, memory_limit 1GB" ;;
        ferry-hash) what="Ferry transform, hash join, 1 GiB pool" ;;
        ferry-sort-merge) what="Ferry transform, sort-merge join, 1 GiB pool" ;;
        ferry-256MiB) what="Ferry transform, 256 MiB pool (hash → sort-merge)" ;;
    esac
    printf '%-52s %9s %12.0f %15s\n' "$what" "$seconds" "$(echo "$rows / $seconds" | bc -l)" "$(peak "$label")"
done
grep -E '^BENCH' "$log" | sed -n 's/.*\(sort_merge_reruns=[0-9]*\).*/\1/p' | sort | uniq -c | sed 's/^/reruns: /'
