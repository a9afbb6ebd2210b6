#!/usr/bin/env bash
# Data-plane benchmark: a verified 3-source Trove download against nginx + curl (one
# stream, sendfile on) and nginx + aria2c -x3 (three ports), in one run on this machine.
#
# Prints MB/s for each (median of RUNS), Trove's ratio to each reference, and CPU seconds per
# GiB spent by the serving processes. Everything listens on 127.0.0.1 only.
#
# Usage: bench/data-plane.sh [SIZE_MIB=1024] [RUNS=3]     (needs nginx-light, curl, aria2)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
for tool in nginx curl aria2c bc python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install nginx-light curl aria2 bc python3)" >&2; exit 1; }
done

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$(mktemp -d /var/tmp/trove-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user and must read the file
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx/nginx.pid" ] && kill "$(cat "$WORK/nginx/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$WORK"
  case ${OUT_DIR:-} in /dev/shm/trove-bench.*) rm -rf "$OUT_DIR";; esac
}
trap cleanup EXIT

. bench/lib.sh
# utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
ticks_of() { local t=0; for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
TICKS=$(getconf CLK_TCK)
now() { date +%s.%N; }

echo "== preparing a ${SIZE_MIB} MiB random file"
mkdir -p "$WORK/www"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/www/file"
BYTES=$(stat -c %s "$WORK/www/file")

echo "== starting 3 troved and putting every chunk on each"
PUB=$("$BIN/trove" keygen --secret-out "$WORK/key")
NODES=()
TROVED_PIDS=()
for i in 1 2 3; do
  "$BIN/troved" --listen 127.0.0.1:0 --data "$WORK/node$i" --trusted-key "$PUB" --capacity 64GiB \
    --disk-reserve 0 --scrub-pause-secs 86400 --scrub-bytes-per-sec 1 >"$WORK/node$i.log" 2>&1 &
  PIDS+=($!); TROVED_PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 200); do [ -s "$WORK/node$i/listen.addr" ] && break; sleep 0.05; done
  NODES+=(--node "$(cat "$WORK/node$i/listen.addr")")
done
t0=$(now)
"$BIN/trove" put "$WORK/www/file" --key "$WORK/key" "${NODES[@]}" --replicas 3 --manifest-out "$WORK/manifest" --no-progress >/dev/null
t1=$(now)
printf 'put: %d MiB x 3 replicas (fsync per chunk) in %.1f s\n' "$SIZE_MIB" "$(echo "$t1 - $t0" | bc -l)"

echo "== starting nginx (sendfile on) on 3 ports"
P1=$(free_port); P2=$(free_port); P3=$(free_port)
start_nginx "$WORK" file "$P1" "$P2" "$P3"
NGINX_PIDS=$(pgrep -f "nginx: worker process" | tr '\n' ' ')

# Warm the page cache for both servers (same file content, different copies on disk).
cat "$WORK/www/file" "$WORK"/node*/chunks/*/* >/dev/null

# Downloads land in tmpfs when there is room, so that every tool is measured on the network and
# verification path rather than on this machine's disk writeback (which varies 3x run to run
# here). BENCH_OUT_DIR=some/dir overrides.
OUT_DIR=${BENCH_OUT_DIR:-}
if [ -z "$OUT_DIR" ] && [ -d /dev/shm ] && [ "$(df --output=avail -B1 /dev/shm | tail -1)" -gt $((3 * BYTES)) ]; then
  OUT_DIR=$(mktemp -d /dev/shm/trove-bench.XXXXXX)
fi
OUT_DIR=${OUT_DIR:-$WORK}
OUT="$OUT_DIR/out"
echo "== downloads go to $OUT_DIR"
run_trove() { rm -f "$OUT" "$OUT.trove-part" "$OUT.trove-state"; "$BIN/trove" fetch "$WORK/manifest" "${NODES[@]}" -o "$OUT" --no-progress >/dev/null 2>&1; }
run_curl() { rm -f "$OUT"; curl -sf -o "$OUT" "http://127.0.0.1:$P1/file"; }
run_aria2() { rm -f "$OUT"; aria2c -q -x3 -s3 -k1M --file-allocation=none --allow-overwrite=true --auto-file-renaming=false \
  -d "$OUT_DIR" -o out "http://127.0.0.1:$P1/file" "http://127.0.0.1:$P2/file" "http://127.0.0.1:$P3/file"; }

# Rounds interleave the tools, and each timed run starts after a sync, so drifting machine
# load and the writeback of the previous download fall on every tool alike.
declare -A RATES CPUS RATE CPU
for _ in $(seq "$RUNS"); do
  for name in trove curl aria2; do
    case $name in trove) servers="${TROVED_PIDS[*]}";; *) servers=$NGINX_PIDS;; esac
    rm -f "$OUT" "$OUT.trove-part" "$OUT.trove-state"; sync
    # shellcheck disable=SC2086
    before=$(ticks_of $servers); t0=$(now)
    "run_$name"
    t1=$(now)
    # shellcheck disable=SC2086
    after=$(ticks_of $servers)
    [ "$(stat -c %s "$OUT")" = "$BYTES" ] || { echo "bench: $name wrote a wrong-sized file" >&2; exit 1; }
    RATES[$name]+="$(echo "$BYTES / ($t1 - $t0) / 1000000" | bc -l) "
    CPUS[$name]+="$(echo "($after - $before) / $TICKS / ($BYTES / 1073741824)" | bc -l) "
  done
done
for name in trove curl aria2; do
  RATE[$name]=$(printf '%s\n' ${RATES[$name]} | median)
  CPU[$name]=$(printf '%s\n' ${CPUS[$name]} | median)
done
cmp -s "$OUT" "$WORK/www/file" || { echo "bench: last download differs from the source" >&2; exit 1; }

printf '\n%-34s %10s %22s\n' "download of ${SIZE_MIB} MiB (median of $RUNS)" "MB/s" "server CPU s per GiB"
printf '%-34s %10.0f %22.2f\n' "trove fetch, 3 sources, verified" "${RATE[trove]}" "${CPU[trove]}"
printf '%-34s %10.0f %22.2f\n' "curl from nginx (sendfile)" "${RATE[curl]}" "${CPU[curl]}"
printf '%-34s %10.0f %22.2f\n' "aria2c -x3 from 3 nginx ports" "${RATE[aria2]}" "${CPU[aria2]}"
printf '\nratio trove/curl  = %.2f\nratio trove/aria2 = %.2f\n' \
  "$(echo "${RATE[trove]} / ${RATE[curl]}" | bc -l)" "$(echo "${RATE[trove]} / ${RATE[aria2]}" | bc -l)"
