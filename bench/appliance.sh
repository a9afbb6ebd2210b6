#!/usr/bin/env bash
# Appliance footprint: is troved small and frugal enough for a Pi Zero 2 W?
#
# Prints, against the goals of issue 6:
#   - the stripped static binary per board target (`just cross`): at most 4 MiB each;
#   - troved's resident memory (native build, same appliance profile) idle with N chunks
#     stored (default 100,000): at most 8 MiB;
#   - its peak resident memory while 3 clients download from it at full speed: at most 32 MiB.
#
# Usage: bench/appliance.sh [N_CHUNKS=100000] [SERVE_MIB=512]   (filling the store takes a
# while: every chunk is fsynced, about 12 minutes for 100,000 on a 2-core VM)
# Run `just cross` first for the sizes (`just bench-appliance` does both). Needs bc.
# The chunks are 16 KiB (the smallest chunk size) so that N of them fit in N/64 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
N_CHUNKS=${1:-100000}
SERVE_MIB=${2:-512}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
SIZE_MAX=$((4 << 20))
IDLE_MAX_KIB=$((8 << 10))
SERVE_MAX_KIB=$((32 << 10))
verdict() { if [ "$1" -le "$2" ]; then echo "ok"; else echo "OVER"; fi; }

echo "== binary sizes (stripped, static; goal <= 4 MiB)"
for t in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  bin="$TARGET_DIR/$t/appliance/troved"
  if [ -f "$bin" ]; then
    bytes=$(stat -c %s "$bin")
    printf '%-32s %9d bytes  %5.2f MiB  %s\n' "$t" "$bytes" "$(echo "$bytes / 1048576" | bc -l)" "$(verdict "$bytes" "$SIZE_MAX")"
  else
    printf '%-32s not built (run `just cross`)\n' "$t"
  fi
done

cargo build -q --profile appliance -p trove-firmware --bin troved
cargo build -q --release -p trove-cli --bin trove
TROVED=$TARGET_DIR/appliance/troved
TROVE=$TARGET_DIR/release/trove
bytes=$(stat -c %s "$TROVED")
printf '%-32s %9d bytes  %5.2f MiB  (native, dynamic glibc)\n' "$(uname -m)" "$bytes" "$(echo "$bytes / 1048576" | bc -l)"

WORK=$(mktemp -d /var/tmp/trove-bench-appliance.XXXXXX)
OUT=$(mktemp -d /dev/shm/trove-bench-appliance.XXXXXX)
PID=
cleanup() {
  status=$?
  [ "$status" = 0 ] || { echo "failed; troved's log ends:" >&2; tail -n 20 "$WORK/troved.log" >&2; }
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK" "$OUT"
}
trap cleanup EXIT

kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }
start_troved() {
  rm -f "$WORK/data/listen.addr"
  "$TROVED" --listen 127.0.0.1:0 --data "$WORK/data" --trusted-key "$PUB" --capacity 64GiB \
    --disk-reserve 0 >>"$WORK/troved.log" 2>&1 &
  PID=$!
  for _ in $(seq 600); do [ -s "$WORK/data/listen.addr" ] && break; sleep 0.05; done
  ADDR=$(cat "$WORK/data/listen.addr")
}

PUB=$("$TROVE" keygen --secret-out "$WORK/key")
start_troved
echo "== storing $N_CHUNKS chunks of 16 KiB and one ${SERVE_MIB} MiB file (1 MiB chunks)"
head -c $((N_CHUNKS * 16384)) /dev/urandom >"$WORK/small"
t0=$(date +%s)
"$TROVE" put "$WORK/small" --key "$WORK/key" --node "$ADDR" --replicas 1 --chunk-bytes 16384 \
  --manifest-out "$WORK/small.manifest" --no-progress >/dev/null
head -c $((SERVE_MIB << 20)) /dev/urandom >"$WORK/big"
"$TROVE" put "$WORK/big" --key "$WORK/key" --node "$ADDR" --replicas 1 \
  --manifest-out "$WORK/big.manifest" --no-progress >/dev/null
echo "stored in $(( $(date +%s) - t0 )) s; $(find "$WORK/data/chunks" -type f | wc -l) chunk files"
rm -f "$WORK/small" "$WORK/big"

echo "== idle after a restart with every chunk on disk (goal <= 8 MiB)"
kill "$PID"; wait "$PID" 2>/dev/null || true
start_troved
sleep 5
idle=$(kib VmRSS)
printf 'idle RSS %6d KiB  %5.2f MiB  %s   (peak during start %d KiB)\n' "$idle" "$(echo "$idle / 1024" | bc -l)" \
  "$(verdict "$idle" "$IDLE_MAX_KIB")" "$(kib VmHWM)"

echo "== 3 clients fetching the ${SERVE_MIB} MiB file at once (goal <= 32 MiB)"
echo 5 >"/proc/$PID/clear_refs" # resets VmHWM, so the peak below is the serving one
t0=$(date +%s.%N)
CLIENTS=()
for i in 1 2 3; do
  "$TROVE" fetch "$WORK/big.manifest" --node "$ADDR" -o "$OUT/copy$i" --no-progress >/dev/null &
  CLIENTS+=($!)
done
max=0
while kill -0 "${CLIENTS[@]}" 2>/dev/null; do
  now=$(kib VmRSS); [ "$now" -gt "$max" ] && max=$now
  sleep 0.1
done
for c in "${CLIENTS[@]}"; do wait "$c"; done
secs=$(echo "$(date +%s.%N) - $t0" | bc -l)
peak=$(kib VmHWM)
[ "$max" -gt "$peak" ] && peak=$max
printf 'serving RSS peak %6d KiB  %5.2f MiB  %s   (3 x %d MiB in %.1f s, %.0f MB/s total)\n' "$peak" \
  "$(echo "$peak / 1024" | bc -l)" "$(verdict "$peak" "$SERVE_MAX_KIB")" "$SERVE_MIB" "$secs" \
  "$(echo "3 * $SERVE_MIB * 1.048576 / $secs" | bc -l)"
echo "threads: $(ls "/proc/$PID/task" | wc -l)"
