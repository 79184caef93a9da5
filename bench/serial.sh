#!/usr/bin/env bash
# Flashes one 1 MiB ESP8266 image over a simulated 115200-baud link (the ROM
# simulator from tests/esp8266_sim with its line-rate model on) twice: with
# esptool --no-stub (the ROM protocol, as the agent speaks it) and with
# `fota-agent install`; prints both times, their ratio and the efficiency
# against the raw line rate (115200 baud, 8N1 = 11520 bytes/s).
#
# Usage: bench/serial.sh [image size in bytes, default 1048576]
# Needs: cargo, python3, esptool (`.ci/run` installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1048576}
BAUD=115200
LINE_RATE=$((BAUD / 10))

esptool_cmd=(esptool)
command -v esptool >/dev/null || esptool_cmd=(python3 -m esptool)
"${esptool_cmd[@]}" version >/dev/null 2>&1 || { echo "esptool missing: run .ci/run" >&2; exit 1; }

echo "== build (release)" >&2
cargo build --release --quiet --bin fota-agent
SIM=$(cargo test --release --quiet --test esp8266_sim --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "esp8266_sim" and m.get("executable"):
        print(m["executable"])')
AGENT=${CARGO_TARGET_DIR:-target}/release/fota-agent

WORK=$(mktemp -d)
SIM_PID=
cleanup() {
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A valid ESP8266 v1 image (two segments, checksum) padded with data to SIZE.
python3 - "$WORK/image.bin" "$SIZE" <<'PY'
import os, random, struct, sys
path, size = sys.argv[1], int(sys.argv[2])
rnd = random.Random(8266)
segs = [(0x40100000, bytes(rnd.getrandbits(8) for _ in range(3000))),
        (0x3FFE8000, bytes(rnd.getrandbits(8) for _ in range(1200)))]
img = bytearray([0xE9, len(segs), 0x00, 0x40]) + struct.pack("<I", 0x40100004)
chk = 0xEF
for addr, data in segs:
    img += struct.pack("<II", addr, len(data)) + data
    for b in data:
        chk ^= b
while len(img) % 16 != 15:
    img.append(0)
img.append(chk)
img += bytes(rnd.getrandbits(8) for _ in range(max(0, size - len(img))))
open(path, "wb").write(img)
PY

start_sim() { # $1 = dump file; sets PORT and SIM_PID
    rm -f "$WORK/pty"
    "$SIM" serve --line-rate "$BAUD" --path-file "$WORK/pty" --dump "$1" >/dev/null 2>"$WORK/sim.log" &
    SIM_PID=$!
    for _ in $(seq 100); do [ -s "$WORK/pty" ] && break; sleep 0.05; done
    PORT=$(cat "$WORK/pty")
}
stop_sim() {
    kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=
}
check_flash() { # $1 = dump, $2 = who
    cmp -s -n "$SIZE" "$1" "$WORK/image.bin" || { echo "$2: flash differs from the image" >&2; exit 1; }
}
now() { date +%s.%N; }

echo "== esptool --no-stub" >&2
start_sim "$WORK/esptool.flash"
t0=$(now)
"${esptool_cmd[@]}" --chip esp8266 --port "$PORT" --baud "$BAUD" --before no-reset --after no-reset \
    --no-stub write-flash 0x0 "$WORK/image.bin" >"$WORK/esptool.log" 2>&1 ||
    { cat "$WORK/esptool.log" >&2; exit 1; }
t1=$(now)
stop_sim
check_flash "$WORK/esptool.flash" esptool

echo "== fota-agent install" >&2
start_sim "$WORK/agent.flash"
mkdir -p "$WORK/firmware"
cat >"$WORK/config.toml" <<TOML
[agent]
state_dir = "$WORK/state"
[source]
kind = "directory"
path = "$WORK/firmware"
[[device]]
id = "esp1"
type = "esp"
handler = "esp8266"
port = "$PORT"
baud = $BAUD
reset = "none"
TOML
t2=$(now)
"$AGENT" --config "$WORK/config.toml" install --device esp1 "$WORK/image.bin" >"$WORK/agent.log" 2>&1 ||
    { cat "$WORK/agent.log" >&2; exit 1; }
t3=$(now)
stop_sim
check_flash "$WORK/agent.flash" fota-agent

python3 - "$SIZE" "$LINE_RATE" "$t0" "$t1" "$t2" "$t3" "$("${esptool_cmd[@]}" version | tail -n1)" <<'PY'
import sys
size, rate = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3 = map(float, sys.argv[3:7])
esp, agent = t1 - t0, t3 - t2
print(f"{size} bytes over a simulated {rate * 10}-baud link (raw line rate {rate} B/s)\n")
print("| tool                        | time (s) | bytes/s | efficiency vs line rate |")
print("|-----------------------------|---------:|--------:|------------------------:|")
for name, t in ((f"esptool {sys.argv[7]} --no-stub", esp), ("fota-agent install", agent)):
    print(f"| {name:<27} | {t:8.1f} | {size / t:7.0f} | {100 * size / t / rate:22.1f}% |")
print(f"\nfota-agent / esptool time ratio: {agent / esp:.3f}")
PY
