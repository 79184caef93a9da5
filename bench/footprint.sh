#!/usr/bin/env bash
# Footprint of one agent binary: its size, idle RSS (`run` with the directory
# source and the status endpoint up) and `fetch --sha256` of an image from
# loopback nginx (time and peak RSS) beside `curl -o` and `curl -o && sync -d`,
# median of RUNS. The environment reaches the agent, so glibc malloc tunables can
# be compared on one binary (e.g. MALLOC_ARENA_MAX=8 bench/footprint.sh). Not a
# test: nothing here passes or fails.
#   bench/footprint.sh [SIZE_MIB] [RUNS]
# FOTA_AGENT_BIN=path measures that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-256}"
runs="${2:-5}"
for p in nginx-light time bc curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
agent="${FOTA_AGENT_BIN:-${CARGO_TARGET_DIR:-target}/release/fota-agent}"
[ -n "${FOTA_AGENT_BIN:-}" ] || cargo build --release --quiet

work=$(mktemp -d /var/tmp/fota-footprint.XXXXXX)
nginx_pid=""
idle_pid=""
cleanup() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
    [ -n "$idle_pid" ] && kill "$idle_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work" # nginx workers run as nobody
mkdir -p "$work"/{srv,state,firmware,nginx}
head -c "$((size_mib << 20))" /dev/urandom >"$work/srv/image.bin"
sha=$(sha256sum "$work/srv/image.bin" | cut -d' ' -f1)

port=$((20000 + RANDOM % 20000))
cat >"$work/nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $work/nginx/pid; error_log $work/nginx/error.log;
events { worker_connections 64; }
http { access_log off; sendfile on; client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx; types { application/octet-stream bin; }
  server { listen 127.0.0.1:$port; root $work/srv; } }
CONF
nginx -c "$work/nginx/nginx.conf" &
nginx_pid=$!
url="http://127.0.0.1:$port/image.bin"
for _ in $(seq 100); do curl -sf -o /dev/null -r 0-0 "$url" && break; sleep 0.1; done

# Idle: once the endpoint answers and the first (empty) cycle is over.
sport=$((port + 1))
cat >"$work/idle.toml" <<TOML
[agent]
state_dir = "$work/state"
[status]
listen = "127.0.0.1:$sport"
[source]
kind = "directory"
path = "$work/firmware"
[[device]]
id = "bench"
type = "bench"
handler = "command"
update_command = ["/bin/true"]
TOML
"$agent" --config "$work/idle.toml" run >"$work/idle.log" 2>&1 &
idle_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$sport/status" && break; sleep 0.1; done
sleep 2 # a gauge, not a test
curl -sf -o /dev/null "http://127.0.0.1:$sport/status"
idle=$(awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} /^Threads/ {t=$2}
    END {printf "%.1f MiB (peak %.1f MiB, %d threads)", r / 1024, h / 1024, t}' "/proc/$idle_pid/status")
kill "$idle_pid"
wait "$idle_pid" 2>/dev/null || true
idle_pid=""

# measure NAME CMD...: one run's wall seconds and peak RSS (KiB) appended to $work/NAME.
measure() {
    local name=$1
    shift
    rm -f "$work/out.bin" "$work/out.bin.part"*
    /usr/bin/time -f '%e %M' -o "$work/t" "$@" >"$work/last.log" 2>&1 ||
        { echo "$name failed:" >&2; tail -n 20 "$work/last.log" >&2; exit 1; }
    cat "$work/t" >>"$work/$name"
}
for _ in $(seq "$runs"); do
    measure curl_o curl -sf -o "$work/out.bin" "$url"
    measure curl_sync bash -c "curl -sf -o '$work/out.bin' '$url' && sync -d '$work/out.bin'"
    measure fetch "$agent" fetch "$url" -o "$work/out.bin" --sha256 "$sha"
done
median() {
    sort -n "$work/$1" | awk -v n="$runs" 'NR == int((n + 1) / 2) {printf "%.2f s, %.1f MiB", $1, $2 / 1024}'
}
printf '\n%s, %s MiB image, median of %s\n\n' "$agent" "$size_mib" "$runs"
printf '| %-28s | %-34s |\n' "binary" "$(stat -c %s "$agent" | awk '{printf "%.2f MiB (%d B)", $1 / 1048576, $1}')"
printf '| %-28s | %-34s |\n' "idle RSS" "$idle"
printf '| %-28s | %-34s |\n' "fetch --sha256" "$(median fetch)"
printf '| %-28s | %-34s |\n' "curl -o" "$(median curl_o)"
printf '| %-28s | %-34s |\n' "curl -o && sync -d" "$(median curl_sync)"
