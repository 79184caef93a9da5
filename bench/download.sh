#!/usr/bin/env bash
# Download benchmark: one file (default 1 GiB) served by nginx on loopback,
# fetched by `curl -o`, by `curl -o` + `sha256sum`, and by `fota-agent fetch
# --sha256` (which writes, hashes, fsyncs and verifies in one pass), with
# fota-agent's peak RSS. `curl -o && sync -d` is the like-for-like baseline for
# the fsync the agent does before renaming the file into place. Prints a table. Not a test: nothing here passes or fails.
#   bench/download.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-1024}"
. bench/lib.sh
bench_need nginx-light time bc curl
bench_agent

work=$(mktemp -d /var/tmp/fota-bench.XXXXXX)
nginx_pid=""
trap 'kill $nginx_pid 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work" # nginx workers run as nobody
mkdir -p "$work/srv"
head -c "$((size_mib << 20))" /dev/urandom > "$work/srv/fw.bin"
sha=$(sha256sum "$work/srv/fw.bin" | cut -d' ' -f1)
# nginx (sendfile), not `python3 -m http.server`: Python's server was the
# bottleneck, slower than either client.
start_nginx "$work" fw.bin
url="$base/fw.bin"

# Interleaved, each run after bench/lib.sh's clean_outputs and sync.
clean_outputs() { rm -f "$work"/out*; }
for _ in 1 2 3; do
    measure curl_o curl -sf -o "$work/out" "$url"
    measure curl_sync bash -c "curl -sf -o '$work/out' '$url' && sync -d '$work/out'"
    measure curl_sha bash -c "curl -sf -o '$work/out' '$url' && sha256sum '$work/out'"
    measure fetch "$agent" fetch "$url" -o "$work/out" --sha256 "$sha"
done
best() { sort -n "$work/$1" | awk 'NR == 1 {printf "%.2f", $1}'; }
curl_only=$(best curl_o)
curl_sync=$(best curl_sync)
curl_sha=$(best curl_sha)
agent_t=$(best fetch)
rss_kib=$(sort -n -k2 "$work/fetch" | awk 'END {print $2}')

mibs() { echo "$size_mib / $1" | bc -l | xargs printf '%.0f'; }
printf '\n%s MiB from nginx over loopback, best of 3, %s\n\n' "$size_mib" "$(date -u +%F)"
printf '| %-38s | %8s | %8s |\n' "command" "seconds" "MiB/s"
printf '|%s|%s|%s|\n' "----------------------------------------" "----------" "----------"
printf '| %-38s | %8s | %8s |\n' "curl -o" "$curl_only" "$(mibs "$curl_only")"
printf '| %-38s | %8s | %8s |\n' "curl -o && sync -d (fdatasync)" "$curl_sync" "$(mibs "$curl_sync")"
printf '| %-38s | %8s | %8s |\n' "curl -o && sha256sum" "$curl_sha" "$(mibs "$curl_sha")"
printf '| %-38s | %8s | %8s |\n' "fota-agent fetch --sha256" "$agent_t" "$(mibs "$agent_t")"
printf '\nfota-agent peak RSS (largest of its 3 runs): %.1f MiB\n' "$(echo "$rss_kib / 1024" | bc -l)"
