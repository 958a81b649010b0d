#!/usr/bin/env bash
# Executions benchmark: 10,000 executions of a one-step project (`select 1
# as one` on a PostgreSQL connector) through api → Redis → 2 workers, then
# 200 executions/s offered for 20 s; next to pgbench and redis-benchmark on
# the same servers, in the same run on the same machine. See
# loadtests/README.md ("Executions").
#
#   bash loadtests/executions/run.sh
#   FERRY_BENCH_EXECUTIONS=2000 FERRY_BENCH_SECONDS=10 bash loadtests/executions/run.sh
#   FERRY_BENCH_WORKER_CONCURRENCY=16 FERRY_BENCH_CLIENTS=64 bash loadtests/executions/run.sh
#
# PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at
# 127.0.0.1:6379, as in the test suite. Everything the run creates (a
# database, a login role, Redis keys under a unique prefix, pgbench's scratch
# database, redis-benchmark's keys in database 15) is removed at the end.
set -euo pipefail

cd "$(dirname "$0")/../.."
pg=(-h 127.0.0.1 -p 5432 -U postgres)
redis_db="${REDIS_BENCH_DB:-15}"
seconds="${BASELINE_SECONDS:-5}"

if ! psql "${pg[@]}" -d postgres -XAtqc 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL must be running at 127.0.0.1:5432 (bash scripts/services.sh)" >&2
    exit 1
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis must be running at 127.0.0.1:6379 (bash scripts/services.sh)" >&2
    exit 1
fi

work="$(mktemp -d)"
scratch="ferry_bench_pgbench_$$"
cleanup() {
    psql "${pg[@]}" -d postgres -XAtqc "DROP DATABASE IF EXISTS $scratch WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
log="$work/ferry.log"

echo "== Ferry executions benchmark (release build) =="
echo "load before: $(uptime)"
cargo test --release -p ferry-cli --test cli bench_executions -- --ignored --nocapture 2>&1 | tee "$log"
if ! grep -q '^BENCH' "$log"; then
    echo "the benchmark printed no figures" >&2
    exit 1
fi
echo "load after: $(uptime)"

echo
echo "== baselines (same PostgreSQL and Redis, ${seconds} s each) =="
echo 'select 1 as one;' >"$work/select1.sql"
pgbench_run() { # pgbench_run <name> <pgbench args…>: "name|tps|latency average ms"
    local name="$1"
    shift
    local out
    out="$(pgbench "${pg[@]}" -n "$@" 2>&1)"
    printf '%s|%s|%s\n' "$name" \
        "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)" \
        "$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -1)"
}
baselines="$work/baselines"
{
    pgbench_run "pgbench 'select 1 as one' 1 client" -f "$work/select1.sql" -c 1 -T "$seconds" postgres
    pgbench_run "pgbench 'select 1 as one' 16 clients" -f "$work/select1.sql" -c 16 -j 2 -T "$seconds" postgres
    pgbench_run "pgbench same, new connection each (-C)" -C -f "$work/select1.sql" -c 1 -T "$seconds" postgres
    psql "${pg[@]}" -d postgres -XAtqc "CREATE DATABASE $scratch"
    pgbench "${pg[@]}" -i -q -s 1 "$scratch" >/dev/null 2>&1
    pgbench_run "pgbench tpcb-like (5 stmts + commit) 8 clients" -c 8 -j 2 -T "$seconds" "$scratch"
    pgbench_run "pgbench simple-update (3 stmts + commit) 8 clients" -b simple-update -c 8 -j 2 -T "$seconds" "$scratch"
} >"$baselines"

# One psql process per query (what an operator's script pays).
runs=50
start="$(date +%s%N)"
for _ in $(seq "$runs"); do
    psql "${pg[@]}" -d postgres -XAtqc 'select 1 as one' >/dev/null
done
psql_ms="$(echo "($(date +%s%N) - $start) / 1000000 / $runs" | bc -l)"

redis_out="$(redis-benchmark -h 127.0.0.1 -p 6379 --dbnum "$redis_db" -q -n 100000 -t set,lpush | tr '\r' '\n' | grep 'requests per second')"
redis-cli -h 127.0.0.1 -p 6379 -n "$redis_db" del key:__rand_int__ mylist >/dev/null
cat "$baselines"
printf 'psql process per query|-|%.2f\n' "$psql_ms"
echo "$redis_out"

field() { # field <line> <key>: the value after "<key>="
    sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1"
}
drain="$(grep '^BENCH phase=drain' "$log" | tail -1)"
latency="$(grep '^BENCH phase=latency' "$log" | tail -1)"

echo
echo "== side by side =="
printf '%-52s %14s   %s\n' "system" "per second" "latency (ms)"
printf '%-52s %14s   %s\n' \
    "ferry drain: $(field "$drain" executions) executions, $(field "$drain" clients) clients" \
    "$(field "$drain" executions_per_s)" \
    "enqueue-to-start p50 $(field "$drain" queue_p50) p99 $(field "$drain" queue_p99); POST p50 $(field "$drain" http_p50) p99 $(field "$drain" http_p99)"
printf '%-52s %14s   %s\n' "ferry drain: enqueue (POST /execute)" "$(field "$drain" enqueue_per_s)" \
    "backlog when the last POST returned: $(field "$drain" backlog)"
printf '%-52s %14s   %s\n' "ferry latency: $(field "$latency" offered_per_s)/s offered" \
    "$(field "$latency" achieved_per_s)" \
    "enqueue-to-start p50 $(field "$latency" start_p50) p99 $(field "$latency" start_p99); end-to-end p50 $(field "$latency" e2e_p50) p99 $(field "$latency" e2e_p99)"
printf '%-52s %14s   %s\n' "  where: queue / claim / step / finish (p50)" "" \
    "$(field "$latency" queue_p50) / $(field "$latency" claim_p50) / $(field "$latency" step_p50) / $(field "$latency" finish_p50)"
printf '%-52s %14s   %s\n' "  where: queue / claim / step / finish (mean)" "" \
    "$(field "$latency" queue_mean) / $(field "$latency" claim_mean) / $(field "$latency" step_mean) / $(field "$latency" finish_mean)"
while IFS='|' read -r name tps lat; do
    if [ -n "$tps" ] && [ "$tps" != - ]; then tps="$(printf '%.0f' "$tps")"; fi
    printf '%-52s %14s   %s\n' "$name" "${tps:--}" "average ${lat:--}"
done < <(cat "$baselines"; printf 'psql process per query|-|%.2f\n' "$psql_ms")
while read -r line; do
    printf '%-52s %14s   %s\n' "redis-benchmark ${line%%:*}" \
        "$(sed -n 's/.*: \([0-9.]*\) requests.*/\1/p' <<<"$line")" \
        "p50 $(sed -n 's/.*p50=\([0-9.]*\) msec.*/\1/p' <<<"$line")"
done <<<"$redis_out"
