#!/usr/bin/env bash
# Footprint of one agent binary: its size, idle RSS (`run` with the directory
# source and the status endpoint up) and `fetch --sha256` of an image from
# loopback nginx (time and peak RSS) beside `curl -o` and `curl -o && sync -d`,
# median of RUNS; then where the memory is: idle RSS by mapping (anonymous, the
# binary, libc) and one fetch's peak anonymous and file-backed RSS, sampled. The environment reaches the agent, so glibc malloc tunables can
# be compared on one binary (e.g. MALLOC_ARENA_MAX=8 bench/footprint.sh). Not a
# test: nothing here passes or fails.
#   bench/footprint.sh [SIZE_MIB] [RUNS]
# FOTA_AGENT_BIN=path measures that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-256}"
runs="${2:-5}"
. bench/lib.sh
bench_need nginx-light time bc curl
bench_agent

work=$(mktemp -d /var/tmp/fota-footprint.XXXXXX)
nginx_pid="" idle_pid=""
trap 'kill $nginx_pid $idle_pid 2>/dev/null; rm -rf "$work"' EXIT
chmod 755 "$work" # nginx workers run as nobody
mkdir -p "$work"/{srv,state,firmware}
head -c "$((size_mib << 20))" /dev/urandom >"$work/srv/image.bin"
sha=$(sha256sum "$work/srv/image.bin" | cut -d' ' -f1)

start_nginx "$work" image.bin
url="$base/image.bin"

# Idle: once the endpoint answers and the first (empty) cycle is over.
sport=$((port + 1))
cat >"$work/idle.toml" <<TOML
agent = { state_dir = "$work/state" }
status = { listen = "127.0.0.1:$sport" }
source = { kind = "directory", path = "$work/firmware" }
device = [{ id = "bench", type = "bench", handler = "command", update_command = ["/bin/true"] }]
TOML
"$agent" --config "$work/idle.toml" run >"$work/idle.log" 2>&1 &
idle_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$sport/status" && break; sleep 0.1; done
sleep 2 # a gauge, not a test
curl -sf -o /dev/null "http://127.0.0.1:$sport/status"
idle=$(awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} /^Threads/ {t=$2}
    END {printf "%.1f MiB (peak %.1f MiB, %d threads)", r / 1024, h / 1024, t}' "/proc/$idle_pid/status")
idle_parts=$(rss_parts "$idle_pid")
kill "$idle_pid"
wait "$idle_pid" 2>/dev/null || true
idle_pid=""

clean_outputs() { rm -f "$work/out.bin" "$work/out.bin.part"*; }
for _ in $(seq "$runs"); do
    measure curl_o curl -sf -o "$work/out.bin" "$url"
    measure curl_sync bash -c "curl -sf -o '$work/out.bin' '$url' && sync -d '$work/out.bin'"
    measure fetch "$agent" fetch "$url" -o "$work/out.bin" --sha256 "$sha"
done
# One more fetch, sampled: how much of its peak is its own memory.
clean_outputs
"$agent" fetch "$url" -o "$work/out.bin" --sha256 "$sha" >"$work/last.log" 2>&1 &
read -r peak_anon peak_file peak_hwm < <(rss_peaks $!)
wait $! || { echo "sampled fetch failed:" >&2; tail -n 20 "$work/last.log" >&2; exit 1; }
fetch_parts=$(awk -v a="$peak_anon" -v f="$peak_file" -v h="$peak_hwm" \
    'BEGIN {printf "anon %.1f, file-backed %.1f, VmHWM %.1f MiB", a / 1024, f / 1024, h / 1024}')

printf '\n%s, %s MiB image, median of %s\n\n' "$agent" "$size_mib" "$runs"
printf '| %-28s | %-34s |\n' "binary" "$(stat -c %s "$agent" | awk '{printf "%.2f MiB (%d B)", $1 / 1048576, $1}')"
printf '| %-28s | %-34s |\n' "idle RSS" "$idle"
printf '| %-28s | %-34s |\n' "idle RSS by mapping" "$idle_parts"
printf '| %-28s | %-34s |\n' "fetch --sha256" "$(median fetch)"
printf '| %-28s | %-34s |\n' "fetch peaks, sampled" "$fetch_parts"
printf '| %-28s | %-34s |\n' "curl -o" "$(median curl_o)"
printf '| %-28s | %-34s |\n' "curl -o && sync -d" "$(median curl_sync)"
