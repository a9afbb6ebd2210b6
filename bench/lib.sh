# Shared by the benchmark scripts (sourced): ports, medians, and nginx as the reference
# server. Everything listens on 127.0.0.1 only.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# start_nginx WORK FILE PORT...: nginx (sendfile on, two workers) serving WORK/www on each
# PORT, state under WORK/nginx; returns once http://127.0.0.1:PORT/FILE answers on the first.
# The caller stops it with the pid in WORK/nginx/nginx.pid.
start_nginx() {
  local work=$1 file=$2 port servers=""
  shift 2
  for port in "$@"; do servers+="  server { listen 127.0.0.1:$port; root $work/www; }"$'\n'; done
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
$servers}
CONF
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>/dev/null &
  local _
  for _ in $(seq 200); do
    curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$1/$file" && return 0
    sleep 0.05
  done
  echo "bench: nginx did not serve the file:" >&2
  cat "$work/nginx/error.log" >&2
  return 1
}
