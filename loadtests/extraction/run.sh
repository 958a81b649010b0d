#!/usr/bin/env bash
# Extraction benchmark: the 5 000 000-row bench_sales table exported by one
# Ferry step to Parquet (zstd) on file://, next to psql's binary COPY of the
# same table to /dev/null, in the same run on the same machine. See
# README.md beside this script.
#
#   bash loadtests/extraction/run.sh
#   RUNS=3 bash loadtests/extraction/run.sh        # more alternating runs
#   FERRY_BENCH_MODE=extended bash loadtests/extraction/run.sh
#
# PostgreSQL at 127.0.0.1:5432, user postgres (trust), as in the test suite.
set -euo pipefail

cd "$(dirname "$0")/../.."
host=127.0.0.1
user=postgres
db="${FERRY_BENCH_DATABASE:-ferry_bench}"
runs="${RUNS:-2}"
psql_base=(psql -h "$host" -U "$user" -X -q -v ON_ERROR_STOP=1)

if ! "${psql_base[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL must be running at $host:5432 (bash scripts/services.sh)" >&2
    exit 1
fi
if [ "$("${psql_base[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    echo "creating database $db" >&2
    "${psql_base[@]}" -d postgres -c "CREATE DATABASE $db"
fi
if [ "$("${psql_base[@]}" -d "$db" -tAc "SELECT to_regclass('bench_sales') IS NOT NULL")" != t ]; then
    echo "loading bench_sales (5 000 000 rows, about a minute)" >&2
    "${psql_base[@]}" -d "$db" -f loadtests/extraction/bench_sales.sql
    "${psql_base[@]}" -d "$db" -c 'VACUUM (ANALYZE) bench_sales'
fi
rows="$("${psql_base[@]}" -d "$db" -tAc 'SELECT count(*) FROM bench_sales')"

echo "== building the benchmark (release) =="
bin="$(cargo test --release -p ferry-worker --test extract --no-run 2>&1 \
    | sed -n 's/.*Executable .*(\(.*\/extract-[0-9a-f]*\)).*/\1/p' | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "could not find the extract test binary" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
copy_baseline() {
    # %e: elapsed seconds, %M: peak RSS in KiB (of psql itself)
    /usr/bin/time -f 'COPY %e %M' "${psql_base[@]}" -d "$db" \
        -c "\\copy (select * from bench_sales) to '/dev/null' with (format binary)" 2>&1 | grep '^COPY' >>"$log"
}
ferry() {
    FERRY_BENCH_DATABASE="$db" /usr/bin/time -f 'PROCESS %e %M' \
        "$bin" bench::bench_extraction --exact --ignored --nocapture 2>&1 | grep -E '^(BENCH|PROCESS)' >>"$log"
}

echo "== $runs alternating runs: psql COPY baseline, then Ferry =="
for _ in $(seq "$runs"); do
    copy_baseline
    ferry
done
cat "$log"

field() { # field <line> <key>: the value after "<key>="
    sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"
}
best_copy="$(awk '/^COPY/ {print $2}' "$log" | sort -n | head -1)"
best_ferry_line="$(grep '^BENCH' "$log" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^seconds=/) {split($i, a, "="); print a[2], $0}}' | sort -n | head -1 | cut -d' ' -f2-)"
ferry_seconds="$(field "$best_ferry_line" seconds)"
ferry_peak="$(grep '^BENCH' "$log" | sed -n 's/.*peak_rss_mib=\([0-9.]*\).*/\1/p' | sort -n | tail -1)"
process_peak="$(awk '/^PROCESS/ {printf "%.1f\n", $3 / 1024}' "$log" | sort -n | tail -1)"

echo
echo "== side by side (best of $runs; $rows rows) =="
printf '%-44s %10s %14s %16s\n' "system" "seconds" "rows / s" "peak RSS (MiB)"
printf '%-44s %10s %14.0f %16s\n' "psql \\copy (select …) to /dev/null binary" "$best_copy" \
    "$(echo "$rows / $best_copy" | bc -l)" "-"
printf '%-44s %10s %14.0f %16s\n' "ferry step → Parquet zstd(1) on file://" "$ferry_seconds" \
    "$(echo "$rows / $ferry_seconds" | bc -l)" "$ferry_peak (process $process_peak)"
printf 'ratio ferry rows/s ÷ COPY rows/s: %.2f×   (ferry time ÷ COPY time: %.2f×)\n' \
    "$(echo "$best_copy / $ferry_seconds" | bc -l)" "$(echo "$ferry_seconds / $best_copy" | bc -l)"
# Both sides vary from run to run on a shared machine; the ratio within each
# alternating pair (COPY, then Ferry) is steadier than best against best.
pairs="$(paste -d' ' <(awk '/^COPY/ {print $2}' "$log") \
    <(grep '^BENCH' "$log" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p'))"
ratios="$(awk '{printf "%.2f\n", $1 / $2}' <<<"$pairs" | sort -n)"
median="$(awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}' <<<"$ratios")"
printf 'per pair (COPY ÷ ferry time): %s; median %s×\n' "$(tr '\n' ' ' <<<"$ratios" | sed 's/ $//')" "$median"
echo "details: $best_ferry_line"
