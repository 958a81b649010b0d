#!/usr/bin/env bash
# Queue benchmark: Ferry's queue (Redis Streams backend and embedded SQLite
# backend, driven by run_worker) next to redis-benchmark on the same Redis,
# in the same run on the same machine. See README.md beside this script.
#
#   bash loadtests/queue/run.sh                        # Redis at 127.0.0.1:6379
#   REDIS_HOST=10.0.0.5 REDIS_PORT=6380 bash loadtests/queue/run.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
host="${REDIS_HOST:-127.0.0.1}"
port="${REDIS_PORT:-6379}"
export FERRY_BENCH_REDIS_URL="redis://$host:$port"
# redis-benchmark writes its own keys (key:__rand_int__, mylist): keep them
# out of the database the tests share.
db="${REDIS_BENCH_DB:-15}"

if ! redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
    echo "Redis must be running at $host:$port (bash scripts/services.sh)" >&2
    exit 1
fi

echo "== Ferry queue benchmark (release build) =="
echo "load before: $(uptime)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --release -p ferry-worker --test worker bench_queue -- --ignored --nocapture 2>&1 | tee "$log"
if ! grep -q '^BENCH' "$log"; then
    echo "the benchmark printed no figures" >&2
    exit 1
fi

echo "load after: $(uptime)"

echo
echo "== redis-benchmark baseline (same Redis) =="
plain="$(redis-benchmark -h "$host" -p "$port" --dbnum "$db" -q -n 100000 -t set,lpush | tr '\r' '\n' | grep 'requests per second')"
piped="$(redis-benchmark -h "$host" -p "$port" --dbnum "$db" -q -n 100000 -P 16 -t set,lpush | tr '\r' '\n' | grep 'requests per second')"
redis-cli -h "$host" -p "$port" -n "$db" del key:__rand_int__ mylist >/dev/null
echo "$plain"
echo "pipelined (-P 16):"
echo "$piped"

field() { # field <line> <key>: the value after " <key>="
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}

echo
echo "== side by side =="
printf '%-34s %18s %34s\n' "system" "ops or jobs / s" "p50 / p99 latency @200/s"
while read -r line; do
    backend="$(field "$line" queue)"
    drain="$(sed -n 's/.*drain([^)]*)=\([0-9]*\).*/\1/p' <<<"$line")"
    printf '%-34s %18s %34s\n' "ferry $backend: drain 20k, 1 x 50" "$drain" \
        "$(field "$line" p50) / $(field "$line" p99) ms"
    printf '%-34s %18s %34s\n' "ferry $backend: enqueue_many" "$(field "$line" enqueue_many)" \
        "$(field "$line" enqueue_call_p50) / $(field "$line" enqueue_call_p99) ms (1 enqueue)"
    printf '%-34s %18s %34s\n' "ferry $backend: bare round trip" "-" \
        "$(field "$line" ping_p50) / $(field "$line" ping_p99) ms (ping)"
done < <(grep '^BENCH' "$log")
while read -r line; do
    printf '%-34s %18s %34s\n' "redis-benchmark ${line%%:*}" "$(sed -n 's/.*: \([0-9.]*\) requests.*/\1/p' <<<"$line")" "-"
done <<<"$plain"
while read -r line; do
    printf '%-34s %18s %34s\n' "redis-benchmark ${line%%:*} -P 16" "$(sed -n 's/.*: \([0-9.]*\) requests.*/\1/p' <<<"$line")" "-"
done <<<"$piped"
