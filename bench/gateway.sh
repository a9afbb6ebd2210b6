#!/usr/bin/env bash
# Streaming-gateway benchmark: the controller's `GET /api/v1/files/{id}/content` (chunks
# fetched from 3 local appliances, verified, streamed) against nginx serving the same file
# from disk, in one run on this machine.
#
# (a) time to first byte of a 64 KiB Range request in the middle of the file, on chunks the
#     gateway has not cached yet (each run asks a different chunk), median of RUNS: as curl
#     sees it (`%{time_starttransfer}`: the status line and headers, which hyper sends before
#     the body is ready), and to the first byte of the body itself (a small Python client on
#     other cold chunks: what a player waits for, and where the gateway's verification is);
# (b) sustained throughput of a whole-file GET, median of 5 (each run's figures are printed:
#     this VM's neighbours make single runs vary by a quarter).
# Both are measured with curl (`%{time_starttransfer}`, `%{speed_download}`); the page cache
# is warm for both servers. Everything listens on 127.0.0.1 only.
#
# Usage: bench/gateway.sh [SIZE_MIB=1024] [RUNS=9]     (needs nginx-light, curl, bc, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-9}
for tool in nginx curl bc python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install nginx-light curl bc python3)" >&2; exit 1; }
done
[ "$SIZE_MIB" -ge $((2 * RUNS + 4)) ] || { echo "bench: SIZE_MIB must exceed 2 RUNS + 3 (two cold chunks per run)" >&2; exit 1; }

# TROVE_BIN_DIR: binaries built elsewhere (an A/B of two builds), else a release build here.
if [ -n "${TROVE_BIN_DIR:-}" ]; then BIN=$TROVE_BIN_DIR; else cargo build --release --bins -q; BIN=$PWD/target/release; fi
WORK=$(mktemp -d /var/tmp/trove-bench-gw.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user and must read the file
CTL_PID=
cleanup() {
  # The controller stops its local appliances on SIGTERM.
  if [ -n "$CTL_PID" ]; then kill "$CTL_PID" 2>/dev/null || true; wait "$CTL_PID" 2>/dev/null || true; fi
  [ -f "$WORK/nginx/nginx.pid" ] && kill "$(cat "$WORK/nginx/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

. bench/lib.sh

echo "== preparing a ${SIZE_MIB} MiB random file"
mkdir -p "$WORK/www" "$WORK/ctl"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/www/file.mp4"
BYTES=$(stat -c %s "$WORK/www/file.mp4")

echo "== starting the controller with 3 local appliances"
RUST_LOG=warn "$BIN/trove-controller" --data "$WORK/ctl" --http 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 \
  --local-nodes 3 >"$WORK/controller.log" 2>&1 &
CTL_PID=$!
for _ in $(seq 400); do [ -s "$WORK/ctl/http.addr" ] && [ -s "$WORK/ctl/admin.token" ] && break; sleep 0.05; done
CTL="http://$(cat "$WORK/ctl/http.addr")"
TOKEN=$(cat "$WORK/ctl/admin.token")
online() {
  curl -sf -H "Authorization: Bearer $TOKEN" "$CTL/api/v1/nodes" |
    python3 -c 'import json,sys; print(sum(n["state"] == "online" for n in json.load(sys.stdin)))'
}
for _ in $(seq 600); do [ "$(online 2>/dev/null || echo 0)" = 3 ] && break; sleep 0.1; done
[ "$(online)" = 3 ] || { echo "bench: the 3 local appliances did not come online:" >&2; tail "$WORK/controller.log" >&2; exit 1; }

echo "== sharing it (3 copies of every chunk)"
t0=$(date +%s.%N)
FILE_ID=$(TROVE_CONTROLLER=$CTL TROVE_TOKEN=$TOKEN XDG_CONFIG_HOME=$WORK/cli \
  "$BIN/trove" share "$WORK/www/file.mp4" --kind video --wait --json --no-progress |
  python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin if l.startswith("{")][-1]["file_id"])')
printf 'share: %d MiB in %.1f s\n' "$SIZE_MIB" "$(echo "$(date +%s.%N) - $t0" | bc -l)"
GW="$CTL/api/v1/files/$FILE_ID/content"

echo "== starting nginx (sendfile on)"
PORT=$(free_port)
start_nginx "$WORK" file.mp4 "$PORT"
NGINX="http://127.0.0.1:$PORT/file.mp4"

# Warm the page cache for both servers (the same bytes, separate copies on disk): every
# copy on every appliance, since the gateway may ask any holder. Again before each part:
# this machine reclaims page cache it thinks cold (DAMON), and an appliance reading from
# disk would be measured against nginx reading from memory.
# A chunk's block CVs are an extended attribute, kept in a metadata block of its own that
# reading the file does not bring in: read those too.
warm() {
  cat "$WORK/www/file.mp4" "$WORK"/ctl/nodes/node*/chunks/*/* >/dev/null 2>&1 || true
  python3 - "$WORK"/ctl/nodes/node*/chunks <<'PY'
import os, sys
for top in sys.argv[1:]:
    for d, _, files in os.walk(top):
        for f in files:
            try:
                os.getxattr(os.path.join(d, f), "user.trove.cvs")
            except OSError:
                pass
PY
}
warm

# The same bytes from both? (one range, checked)
cmp -s <(curl -sf -r 1000-2000000 -H "Authorization: Bearer $TOKEN" "$GW") <(curl -sf -r 1000-2000000 "$NGINX") ||
  { echo "bench: the gateway and nginx disagree on the bytes" >&2; exit 1; }

echo "== (a) time to first byte, 64 KiB range in the middle, cold chunks, $RUNS runs"
TG=""; TN=""
for i in $(seq "$RUNS"); do
  # Chunk MID+i: never asked before (the check above touched the first two MiB only).
  start=$(( (SIZE_MIB / 2 + i - RUNS / 2) * 1048576 + 12345 ))
  r="$start-$((start + 65535))"
  TG+="$(curl -sf -o /dev/null -r "$r" -H "Authorization: Bearer $TOKEN" -w '%{time_starttransfer}' "$GW") "
  TN+="$(curl -sf -o /dev/null -r "$r" -w '%{time_starttransfer}' "$NGINX") "
done
TTFB_GW=$(printf '%s\n' $TG | median)
TTFB_NG=$(printf '%s\n' $TN | median)

# Seconds from connecting to the first byte of the body, one line per range, of GETs of URL
# with Range RANGES... (one process for all, after one warm-up request on byte 0, so Python's
# start and first connection are counted for neither server).
first_body_byte() {
  python3 - "$@" <<'PY'
import socket, sys, time, urllib.parse
url, token, ranges = sys.argv[1], sys.argv[2], sys.argv[3:]
u = urllib.parse.urlsplit(url)
auth = f"Authorization: Bearer {token}\r\n" if token != "-" else ""
def once(rng):
    req = f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nRange: bytes={rng}\r\n{auth}Connection: close\r\n\r\n".encode()
    t0 = time.perf_counter()
    s = socket.create_connection((u.hostname, u.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        if not got:
            sys.exit("closed before the headers ended")
        buf += got
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 206"):
        sys.exit(f"not a 206: {head[:40]!r}")
    while not body:
        body = s.recv(65536)
        if not body:
            sys.exit("closed before the body")
    t = time.perf_counter() - t0
    s.close()
    return t
once("0-0")
for r in ranges:
    print(once(r))
PY
}
RANGES=""
for i in $(seq "$RUNS"); do
  # Chunks past those of the loop above: cold too.
  start=$(( (SIZE_MIB / 2 + RUNS + 1 + i - RUNS / 2) * 1048576 + 12345 ))
  RANGES+="$start-$((start + 65535)) "
done
warm
# shellcheck disable=SC2086 # one argument per range
BG=$(first_body_byte "$GW" "$TOKEN" $RANGES)
# shellcheck disable=SC2086
BN=$(first_body_byte "$NGINX" - $RANGES)
BODY_GW=$(printf '%s\n' $BG | median)
BODY_NG=$(printf '%s\n' $BN | median)

THROUGHPUT_RUNS=5
echo "== (b) whole-file GET throughput, $THROUGHPUT_RUNS runs each, alternating"
warm
SG=""; SN=""
for _ in $(seq "$THROUGHPUT_RUNS"); do
  SG+="$(curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -w '%{speed_download}' "$GW") "
  SN+="$(curl -sf -o /dev/null -w '%{speed_download}' "$NGINX") "
done
SPEED_GW=$(printf '%s\n' $SG | median)
SPEED_NG=$(printf '%s\n' $SN | median)

printf 'gateway MB/s: %s\nnginx MB/s:   %s\n' "$(printf '%s\n' $SG | awk '{printf "%d ", $1/1e6}')" \
  "$(printf '%s\n' $SN | awk '{printf "%d ", $1/1e6}')"
FETCHED=$(curl -sf "$CTL/metrics" | awk '$1 == "trove_gateway_chunks_fetched_total" {print $2}')
printf '\n%-44s %14s %14s\n' "" "gateway" "nginx"
printf '%-44s %14.2f %14.2f\n' "TTFB, 64 KiB mid-file range, cold (ms, median)" \
  "$(echo "$TTFB_GW * 1000" | bc -l)" "$(echo "$TTFB_NG * 1000" | bc -l)"
printf '%-44s %14.2f %14.2f\n' "first body byte, same, other cold chunks (ms)" \
  "$(echo "$BODY_GW * 1000" | bc -l)" "$(echo "$BODY_NG * 1000" | bc -l)"
printf '%-44s %14.0f %14.0f\n' "whole ${SIZE_MIB} MiB GET (MB/s, median)" \
  "$(echo "$SPEED_GW / 1000000" | bc -l)" "$(echo "$SPEED_NG / 1000000" | bc -l)"
printf '\nTTFB ratio gateway/nginx       = %.2f   (goal: <= 2)\n' "$(echo "$TTFB_GW / $TTFB_NG" | bc -l)"
printf 'first-body-byte ratio          = %.2f\n' "$(echo "$BODY_GW / $BODY_NG" | bc -l)"
printf 'throughput ratio gateway/nginx = %.2f   (goal: >= 0.8)\n' "$(echo "$SPEED_GW / $SPEED_NG" | bc -l)"
echo "chunks the gateway fetched from appliances: $FETCHED"
