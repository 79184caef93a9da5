#!/usr/bin/env bash
# End to end on a real systemd: boots a debootstrapped Debian bookworm tree with
# `systemd-nspawn -b`, installs the built .deb with dpkg, and checks what an
# operator meets: the unit active (READY=1 reached), the status endpoint, a
# firmware dropped into the directory source applied to a demo device, journald
# fields, a watchdog restart after SIGSTOP, a broken config leaving the unit
# failed with the error visible, and purge removing the state.
#
# The Debian tree is cached in /var/cache/fota-agent-e2e (debootstrap takes
# minutes; see lib.sh); every run works on a fresh copy of it. Needs root.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
e2e_fresh_root
check "package installed, unit enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/fota-agent.service"
check "system user in dialout" grep -q '^dialout:.*fota-agent' "$root/etc/group"
# Tokens and device keys live in config.toml: the service's group reads it, others do not.
config_mode() { # read from the host: mode, owner uid, group id against the tree's group file
    local gid mode
    gid=$(awk -F: '$1 == "fota-agent" { print $3 }' "$root/etc/group")
    mode=$(stat -c '%a %u:%g' "$root/etc/fota-agent/config.toml")
    echo "e2e: config.toml is $mode (fota-agent group $gid)"
    [ "$mode" = "640 0:$gid" ]
}
check "config.toml is 0640 root:fota-agent" config_mode
check "config is a conffile" grep -q '/etc/fota-agent/config.toml' "$root/var/lib/dpkg/info/fota-agent.conffiles"

# A demo device driven by the command handler; its "flash" lives in the state dir.
install -D -m 755 "$repo/demo/device.sh" "$root/usr/local/lib/fota-demo/demo/device.sh"
cat >> "$root/etc/fota-agent/config.toml" <<'CONF'

[[device]]
id = "demo-sensor-1"
type = "demo-sensor"
handler = "command"
version_command = ["/usr/local/lib/fota-demo/demo/device.sh", "version"]
update_command = ["/usr/local/lib/fota-demo/demo/device.sh", "update"]
CONF
sed -i 's/^poll_interval = .*/poll_interval = "2s"/' "$root/etc/fota-agent/config.toml"
# The demo script keeps its flash where the hardened unit may write.
mkdir -p "$root/etc/systemd/system/fota-agent.service.d"
cat > "$root/etc/systemd/system/fota-agent.service.d/e2e.conf" <<'CONF'
[Service]
Environment=DEMO_FLASH=/var/lib/fota-agent/demo-sensor-1.flash
WatchdogSec=6s
CONF

e2e_boot

check "unit active after boot (READY=1 reached)" wait_for 30 active
check "systemd-analyze verify is clean" bash -c "! nsenter -t $leader -m -u -i -n -p systemd-analyze verify --man=no fota-agent.service 2>&1 | grep ."
exposure=$(ct systemd-analyze security fota-agent.service 2>/dev/null | sed -n 's/.*Overall exposure level for fota-agent.service: \([0-9.]*\).*/\1/p')
echo "e2e: systemd-analyze security exposure $exposure"
check "security exposure <= 1.5" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }'

# Drop firmware into the directory source; the agent applies it on its next poll.
mkdir -p "$root/var/lib/fota-agent/firmware/demo-sensor"
cp "$repo"/demo/firmware/demo-sensor/demo-sensor-2.0.0.* "$root/var/lib/fota-agent/firmware/demo-sensor/"
flashed() { head -n 1 "$root/var/lib/fota-agent/demo-sensor-1.flash" 2>/dev/null | grep -q "DEMO-SENSOR FIRMWARE 2.0.0"; }
check "dropped firmware applied to the demo device" wait_for 60 flashed
check "journal has the update result" wait_for 10 bash -c "nsenter -t $leader -m -u -i -n -p journalctl -u fota-agent --no-pager | grep -q 'update succeeded'"
journal_fields() {
    ct journalctl -o json --no-pager MESSAGE_ID=1c1dcf88416545298baaa85946b0730f |
        grep '"DEVICE_ID":"demo-sensor-1"' | grep '"FIRMWARE_VERSION":"2.0.0"' | grep -q '"OUTCOME":"success"'
}
check "journald: MESSAGE_ID finds the result with its fields" wait_for 10 journal_fields
status_ok() { ct curl -sf http://127.0.0.1:8470/status | grep -q '"demo-sensor-1"'; }
check "status endpoint answers with the device" wait_for 10 status_ok
metrics_ok() { ct curl -sf http://127.0.0.1:8470/metrics | grep -q 'success'; }
check "metrics endpoint answers" wait_for 10 metrics_ok

# A hung agent is restarted by the watchdog.
pid=$(ct systemctl show -p MainPID --value fota-agent)
ct sh -c "kill -STOP $pid"
restarted() {
    local now
    now=$(ct systemctl show -p MainPID --value fota-agent)
    [ -n "$now" ] && [ "$now" != 0 ] && [ "$now" != "$pid" ] && active
}
check "watchdog restarts a stopped agent" wait_for 60 restarted
check "journal names the watchdog" bash -c "nsenter -t $leader -m -u -i -n -p journalctl -u fota-agent --no-pager | grep -qi 'watchdog'"

# A broken config leaves the unit failed, the error visible.
echo 'colour = "blue"' >> "$root/etc/fota-agent/config.toml"
ct systemctl restart fota-agent >/dev/null 2>&1 || true
failed_unit() { [ "$(ct systemctl show -p ActiveState --value fota-agent)" = failed ]; }
check "broken config leaves the unit failed" wait_for 30 failed_unit
check "config error visible in systemctl status" bash -c "nsenter -t $leader -m -u -i -n -p systemctl status fota-agent --no-pager -n 20 2>&1 | grep -q 'config.toml:[0-9]*: unknown field'"

# Purge removes the state.
ct dpkg --purge fota-agent >/dev/null 2>&1
check "purge removes /var/lib/fota-agent" test ! -e "$root/var/lib/fota-agent"

e2e_summary systemd-e2e
