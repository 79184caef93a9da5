#!/usr/bin/env bash
# Side-by-side benchmark against what Debian packages: the same 256 MiB job for
# fota-agent, Mender (module-image with a copy+sync update module) and SWUpdate
# (a .swu with a rawfile handler), interleaved, median of 3. Every tool ends with
# the image copied to a destination file and fsynced. Then `fetch` against
# `curl -o` (and a fsyncing curl) from loopback, and at 100 Mbit/s. Prints one
# table: time, peak RSS, binary and package size. Not a test: nothing here
# passes or fails.
#   bench/peers.sh [SIZE_MIB] [RUNS]
# Installs mender-client, mender-artifact, swupdate, nginx-light, time, bc, curl
# (apt, when missing). Mender and SWUpdate run with configs and data folders in a
# temp dir; the one host change: Mender 3.4 reads the running artifact's name only
# from /etc/mender/artifact_info, created here when absent and removed at exit.
# nginx serves loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-256}"
runs="${2:-3}"
. bench/lib.sh
bench_need mender-client mender-artifact swupdate nginx-light time bc curl cpio
# FOTA_AGENT_BIN=path measures that binary instead of building one.
bench_agent

work=$(mktemp -d /var/tmp/fota-peers.XXXXXX)
nginx_pid=""
made_info=""
cleanup() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
    [ -n "$made_info" ] && rm -f /etc/mender/artifact_info
    rm -rf "$work"
}
trap cleanup EXIT
if [ ! -e /etc/mender/artifact_info ]; then
    mkdir -p /etc/mender && echo "artifact_name=bench-0" >/etc/mender/artifact_info && made_info=1
fi
chmod 755 "$work"  # nginx workers run as nobody
mkdir -p "$work"/{srv,out,state,firmware,mender/{data,work},nginx}
img="$work/srv/image.bin"
head -c "$((size_mib << 20))" /dev/urandom >"$img"
sha=$(sha256sum "$img" | cut -d' ' -f1)
# 64 MiB for the runs at a gateway's link speed (nginx's /100mbit/).
head -c $((64 << 20)) "$img" >"$work/srv/link.bin"
link_sha=$(sha256sum "$work/srv/link.bin" | cut -d' ' -f1)
dest="$work/out/image.bin"  # Mender's single-file keeps the payload's name

# The one install step every tool runs: copy the image to $dest and fsync it.
cat >"$work/copysync" <<SH
#!/bin/sh
cat "\$1" >"$dest" && sync -d "$dest"
SH
chmod +x "$work/copysync"

# fota-agent: a command-handler device whose update command is copysync.
cat >"$work/agent.toml" <<TOML
[agent]
state_dir = "$work/state"
[source]
kind = "directory"
path = "$work/firmware"
https_only = false  # nginx on loopback serves plain http
[[device]]
id = "bench"
type = "bench"
handler = "command"
update_command = ["$work/copysync"]
TOML

# Mender: standalone `mender install` of a module-image for Debian's own
# `single-file` update module (copy, sync, rename; Mender 3.4 reads update modules
# only from /usr/share/mender/modules/v3, so a module of our own would need a file
# there).
echo "device_type=bench" >"$work/mender/data/device_type"
cat >"$work/mender/mender.conf" <<JSON
{"ServerURL": "https://localhost", "ModulesWorkPath": "$work/mender/work"}
JSON
dirname "$dest" >"$work/mender/dest_dir"
basename "$dest" >"$work/mender/filename"
mender-artifact write module-image -T single-file -n bench-1 -t bench -f "$img" \
    -f "$work/mender/dest_dir" -f "$work/mender/filename" -o "$work/srv/image.mender" >/dev/null
echo '{}' >"$work/mender/fallback.conf"
mender_args="--config $work/mender/mender.conf --fallback-config $work/mender/fallback.conf --data $work/mender/data --no-syslog"

# SWUpdate: a .swu (cpio, newc with CRC) whose one file goes to $dest. Debian
# builds SWUpdate for CMS-signed images only: a throwaway self-signed key signs
# sw-description (the image is covered by its sha256 there).
cat >"$work/sw-description" <<CFG
software = { version = "1.0.0"; hardware-compatibility = [ "1.0" ]; files: ( {
    filename = "image.bin"; path = "$dest"; type = "rawfile"; sha256 = "$sha"; } ); }
CFG
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/swu.key" -out "$work/swu.crt" \
    -subj /CN=bench -days 2 -addext extendedKeyUsage=emailProtection \
    -addext keyUsage=digitalSignature 2>/dev/null
openssl cms -sign -in "$work/sw-description" -out "$work/sw-description.sig" -signer "$work/swu.crt" \
    -inkey "$work/swu.key" -outform DER -nosmimecap -binary
(cd "$work" && cp "$img" image.bin && printf 'sw-description\nsw-description.sig\nimage.bin\n' |
    cpio -o -H crc --quiet >"$work/srv/image.swu" && rm image.bin)

# nginx on loopback.
start_nginx "$work" image.bin

clean_outputs() { rm -f "$dest" "$work/fetched.bin"; }
agent_local() { "$agent" --config "$work/agent.toml" install --device bench --sha256 "$sha" "$img"; }
agent_url() { "$agent" --config "$work/agent.toml" install --device bench --sha256 "$sha" "$base/image.bin"; }
# (Functions, so that /usr/bin/time measures the whole job: `bash -c NAME`.)
mender_local() { mender $mender_args install "$work/srv/image.mender" && mender $mender_args commit; }
mender_url() { mender $mender_args install "$base/image.mender" && mender $mender_args commit; }
swu_local() { swupdate -k "$work/swu.crt" -H bench:1.0 -M -m -l 2 -i "$work/srv/image.swu" && sync -d "$dest"; }
swu_url() { swupdate -k "$work/swu.crt" -H bench:1.0 -M -m -l 2 -d "-u $base/image.swu" && sync -d "$dest"; }
# curl as durable as `fetch`: the file fsynced before it returns.
curl_sync() { curl -sf -o "$work/fetched.bin" "$base/image.bin" && sync -d "$work/fetched.bin"; }
export -f agent_local agent_url mender_local mender_url swu_local swu_url curl_sync
export agent work sha img base dest mender_args

for _ in $(seq "$runs"); do
    measure agent_local bash -c agent_local
    measure mender_local bash -c mender_local
    measure swu_local bash -c swu_local
    measure agent_url bash -c agent_url
    measure mender_url bash -c mender_url
    measure swu_url bash -c swu_url
    measure agent_fetch "$agent" fetch "$base/image.bin" -o "$work/fetched.bin" --sha256 "$sha"
    measure curl_o curl -sf -o "$work/fetched.bin" "$base/image.bin"
    measure curl_sync bash -c curl_sync
    measure agent_fetch_link "$agent" fetch "$base/100mbit/link.bin" -o "$work/fetched.bin" --sha256 "$link_sha"
    measure curl_o_link curl -sf -o "$work/fetched.bin" "$base/100mbit/link.bin"
done

# Idle RSS: `run` with the directory source and the status endpoint up, once the
# endpoint answers, the first cycle is over and one more status request was
# served: sampled after the first answer only, VmRSS read up to 2.3 MiB lower
# (same JSON; the binary's pages are mapped as code first runs), a figure the
# agent does not keep.
sport=$((port + 1))
sed "s|^\[source\]|[status]\nlisten = \"127.0.0.1:$sport\"\n[source]|" "$work/agent.toml" >"$work/idle.toml"
"$agent" --config "$work/idle.toml" run >"$work/idle.log" 2>&1 &
idle_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$sport/status" && break; sleep 0.1; done
sleep 1 # let the first (empty) cycle finish; a gauge, not a test
curl -sf -o /dev/null "http://127.0.0.1:$sport/status"
idle_rss=$(awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2}
    END {printf "%.1f MiB (anon %.1f)", r / 1024, a / 1024}' "/proc/$idle_pid/status")
kill "$idle_pid"
wait "$idle_pid" 2>/dev/null || true

mib() { echo "$1" | awk '{printf "%.2f MiB", $1 / 1048576}'; }
deb_size() { # the installed .deb's size, as apt-cache reports it
    apt-cache show "$1" 2>/dev/null | awk '/^Size:/ {printf "%.1f MB", $2 / 1e6; exit}'
}
our_deb=$(ls -1 target/debian/fota-agent_*.deb 2>/dev/null | tail -n1 || true)
our_deb_size=$([ -n "$our_deb" ] && stat -c %s "$our_deb" | awk '{printf "%.1f MB", $1 / 1e6}' || echo "run debian/build.sh")
swu_libs=$(ldd /usr/bin/swupdate | grep -c '=>' || true)

printf '\n%s MiB image, median of %s, %s, %s\n\n' "$size_mib" "$runs" "$(date -u +%F)" "$(nproc) cores"
printf '| %-36s | %-22s | %-22s | %-22s |\n' "" "fota-agent" "Mender $(mender --version | cut -d+ -f1)" "SWUpdate $(dpkg-query -W -f='${Version}' swupdate | cut -d+ -f1)"
printf '|%s|%s|%s|%s|\n' "--------------------------------------" "------------------------" "------------------------" "------------------------"
printf '| %-36s | %-22s | %-22s | %-22s |\n' "binary, stripped" "$(mib "$(stat -c %s "$agent")")" \
    "$(mib "$(stat -c %s /usr/bin/mender)")" "$(mib "$(stat -c %s /usr/bin/swupdate)") + $swu_libs libs"
printf '| %-36s | %-22s | %-22s | %-22s |\n' ".deb" "$our_deb_size" "$(deb_size mender-client)" "$(deb_size swupdate)"
printf '| %-36s | %-22s | %-22s | %-22s |\n' "idle RSS (directory, status up)" "$idle_rss" "" ""
printf '| %-36s | %-22s | %-22s | %-22s |\n' "install local image (copy + sync)" "$(median agent_local)" "$(median mender_local)" "$(median swu_local)"
printf '| %-36s | %-22s | %-22s | %-22s |\n' "install from a URL (nginx)" "$(median agent_url)" "$(median mender_url)" "$(median swu_url)"
printf '| %-36s | %-22s | %-22s | %-22s |\n' "fetch + verify alone" "$(median agent_fetch)" "curl -o: $(median curl_o)" "curl -o && sync: $(median curl_sync)"
printf '| %-36s | %-22s | %-22s | %-22s |\n' "fetch + verify, 64 MiB at 100 Mbit/s" "$(median agent_fetch_link)" "curl -o: $(median curl_o_link)" ""
