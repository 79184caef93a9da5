#!/usr/bin/env bash
# Issue #17 end to end on a real systemd: the gateway's own OS, A/B through
# Debian's RAUC. Boots the cached bookworm tree (lib.sh) with `systemd-nspawn -b`,
# the .deb's agent as the systemd service, RAUC as rauc.service with two
# file-backed raw slots and a `bootloader=custom` backend
# (tests/rauc_gateway/custom-backend.sh), bundles made with `rauc bundle` and a
# test CA made by openssl, the directory source. RAUC's own D-Bus policy is
# narrowed to root, so the agent reaches RAUC only through the package's
# fota-agent-rauc.conf, and logind's Reboot only through its polkit rule.
#
# A reboot is real: the agent asks logind, the container's systemd reboots and
# nspawn exits; this script is the bootloader (it boots the primary slot, the
# custom backend's state) and boots the tree again, where rauc.service starts
# with `--override-boot-slot` of that slot. A power cut kills the container's
# init: every process in it dies at once.
#
# Checks: a bundle with a bad signature refused; a bundle installed ahead into
# the other slot (background policy, window closed); a power cut before the
# reboot boots the old system with nothing judged; the window opens: UPDATING,
# REBOOTING, the reboot, mark-good, version 2.0 reported, exactly one outcome;
# then 3.0, whose new system is unhealthy: marked bad, the reboot back into 2.0,
# the failure reported once.
# Needs root, rauc, mksquashfs and openssl on the host (.ci/run installs them).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
e2e_fresh_root

check "package ships the D-Bus policy" test -f "$root/usr/share/dbus-1/system.d/fota-agent-rauc.conf"
check "package ships the polkit rule" test -f "$root/usr/share/polkit-1/rules.d/fota-agent.rules"

# --- The gateway: two slots, the boot state, RAUC's system.conf and keyring. ---
lib=/usr/local/lib/fota-e2e
gw=/var/lib/rauc-test
mkdir -p "$root$gw/data" "$root$lib" "$root/etc/rauc" "$root/var/log/journal"
# One machine id over all boots: the journal of every boot is read back.
openssl rand -hex 16 >"$root/etc/machine-id"
for slot in slot0 slot1; do truncate -s 1M "$root$gw/$slot"; done
printf 'PRIMARY=system0\nCURRENT=system0\nSTATE_system0=good\nSTATE_system1=good\n' >"$root$gw/boot-state"
boot_state() { sed -n "s/^$1=//p" "$root$gw/boot-state"; }
install -m 755 "$repo/tests/rauc_gateway/custom-backend.sh" "$root$lib/custom-backend.sh"
cat >"$root/etc/rauc/system.conf" <<CONF
[system]
compatible=acme-gw
bootloader=custom
data-directory=$gw/data

[handlers]
bootloader-custom-backend=$lib/custom-backend.sh

[keyring]
path=/etc/rauc/ca.pem

[slot.rootfs.0]
device=$gw/slot0
type=raw
bootname=system0

[slot.rootfs.1]
device=$gw/slot1
type=raw
bootname=system1
CONF
# RAUC starts with the slot the bootloader booted (what the kernel command line
# would say on hardware).
cat >"$root$lib/rauc-service" <<SH
#!/bin/sh
exec /usr/bin/rauc --mount=/run/rauc service --override-boot-slot="\$(sed -n 's/^CURRENT=//p' $gw/boot-state)"
SH
chmod 755 "$root$lib/rauc-service"
mkdir -p "$root/etc/systemd/system/rauc.service.d"
cat >"$root/etc/systemd/system/rauc.service.d/e2e.conf" <<CONF
[Service]
Environment=FOTA_TEST_BOOT_STATE=$gw/boot-state
ExecStart=
ExecStart=$lib/rauc-service
CONF
# RAUC's own policy lets every user in; narrowed here to root, so only the
# package's fota-agent-rauc.conf lets the agent call it.
cat >"$root/usr/share/dbus-1/system.d/de.pengutronix.rauc.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="de.pengutronix.rauc"/>
    <allow send_destination="de.pengutronix.rauc"/>
  </policy>
</busconfig>
CONF

# --- Bundles: a test CA, RAUC's keyring; 2.0 signed, 1.5 with its signature broken. ---
work="$root.work"
mkdir -p "$work"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$work/ca.key" -out "$work/ca.pem" \
    -subj "/CN=fota-agent e2e CA" 2>/dev/null
cp "$work/ca.pem" "$root/etc/rauc/ca.pem"
bundle() { # bundle VERSION OUT
    local content="$work/content-$1"
    mkdir -p "$content"
    awk -v v="$1" 'BEGIN { for (n = 0; n < 4096; n++) print "rootfs " v }' >"$content/rootfs.img"
    printf '[update]\ncompatible=acme-gw\nversion=%s\n[image.rootfs]\nfilename=rootfs.img\n' "$1" \
        >"$content/manifest.raucm"
    rauc bundle --cert="$work/ca.pem" --key="$work/ca.key" "$content" "$2" >/dev/null 2>&1
}
firmware="$root/var/lib/fota-agent/firmware/acme-gw"
offer() { # offer VERSION: the bundle and its properties in the directory source
    mkdir -p "$firmware"
    cp "$work/update-$1.raucb" "$firmware/"
    printf 'version = %s\nimage = update-%s.raucb\n' "$1" "$1" >"$firmware/update.properties"
}
withdraw() { rm -rf "$firmware"; }
bundle 2.0 "$work/update-2.0.raucb"
bundle 1.5 "$work/update-1.5.raucb"
bundle 3.0 "$work/update-3.0.raucb"
# One byte of the signed payload changed: the CMS signature no longer matches.
printf 'X' | dd of="$work/update-1.5.raucb" bs=1 seek=200 conv=notrunc status=none

# --- The agent: the gateway device, a maintenance window, after RAUC. ---
sed -i 's/^poll_interval = .*/poll_interval = "2s"/' "$root/etc/fota-agent/config.toml"
printf 'ID=acme\nVERSION_ID=1.0\n' >"$root/etc/fota-e2e-os-release"
cat >>"$root/etc/fota-agent/config.toml" <<'CONF'

[[device]]
id = "gateway"
type = "acme-gw"
handler = "rauc"
policy = "background"
executable_command = ["/usr/bin/test", "-e", "/var/lib/fota-agent/window-open"]
health_command = ["/usr/local/lib/fota-e2e/healthy"]
os_release = "/etc/fota-e2e-os-release"
CONF
# Healthy: RAUC runs, and the test has not declared the system broken.
cat >"$root$lib/healthy" <<SH
#!/bin/sh
if [ -e $gw/unhealthy ]; then echo "the e2e test declared this system broken" >&2; exit 1; fi
exec /usr/bin/systemctl is-active --quiet rauc.service
SH
chmod 755 "$root$lib/healthy"
mkdir -p "$root/etc/systemd/system/fota-agent.service.d"
cat >"$root/etc/systemd/system/fota-agent.service.d/rauc.conf" <<'CONF'
[Unit]
Wants=rauc.service
After=rauc.service
CONF

# The loop devices RAUC mounts bundles with.
loops=()
for dev in /dev/loop-control /dev/loop[0-9]*; do loops+=("--bind=$dev"); done
boot() { e2e_boot "${loops[@]}"; }
# The bootloader: boots the primary slot unless it is marked bad.
bootloader() {
    local primary
    primary=$(boot_state PRIMARY)
    [ "$(boot_state "STATE_$primary")" = good ] || primary=$(boot_state CURRENT)
    sed -i "s/^CURRENT=.*/CURRENT=$primary/" "$root$gw/boot-state"
    echo "e2e: the bootloader boots $primary"
}
# Waits for the container to go down by itself (a reboot it asked for).
went_down() { ! kill -0 "$nspawn_pid" 2>/dev/null; }

record() { cat "$root/var/lib/fota-agent/devices/gateway.json" 2>/dev/null; }
outcome_of() { # outcome_of VERSION: the recorded outcome of that version, if any
    record | jq -er --arg v "$1" 'select(.in_flight == null and .last_outcome.version == $v) | .last_outcome | "\(.outcome) \(.reason // "")"'
}
# The gateway is the only device: its version is the only one reported.
reported() { ct curl -sf -m 5 http://127.0.0.1:8470/status | grep -q "\"current_version\":\"$1\""; }

# --- Boot 1: the factory system (slot 0, version 1.0). ---
boot
check "RAUC runs with slot 0 booted" wait_for 30 bash -c "nsenter -t $leader -m -u -i -n -p busctl call de.pengutronix.rauc / de.pengutronix.rauc.Installer GetSlotStatus | grep -q booted"
check "agent active" wait_for 30 active
check "version 1.0 reported (os-release of the factory image)" wait_for 30 reported 1.0
check "RAUC refuses a user its policy does not name" bash -c "! nsenter -t $leader -m -u -i -n -p setpriv --reuid=nobody --regid=nogroup --clear-groups busctl call de.pengutronix.rauc / de.pengutronix.rauc.Installer GetSlotStatus >/dev/null 2>&1"

offer 1.5
check "a bundle with a bad signature fails the update" wait_for 60 outcome_of 1.5
echo "e2e: 1.5: $(outcome_of 1.5 || true)"
refused_by_signature() { outcome_of 1.5 | grep -q 'failed.*RAUC refused the bundle.*signature'; }
check "... refused by RAUC's signature check" refused_by_signature
check "... nothing written to either slot" bash -c "! grep -q rootfs $root$gw/slot0 $root$gw/slot1"
withdraw

offer 2.0
transferred() { record | jq -e '.transferred.version == "2.0"' >/dev/null; }
check "2.0 installed ahead into the other slot (window closed)" wait_for 60 transferred
check "... slot 1 holds the bundle's image" grep -q "rootfs 2.0" "$root$gw/slot1"
check "... slot 0 stays primary" test "$(boot_state PRIMARY)" = system0

# --- A power cut between install and reboot: every process dies at once. ---
kill -9 "$leader"
wait_for 30 went_down || true
e2e_stop
bootloader
boot
check "after the power cut the old system boots" test "$(boot_state CURRENT)" = system0
check "... version 1.0 reported" wait_for 60 reported 1.0
not_judged() { ! outcome_of 2.0 >/dev/null; }
check "... nothing judged" not_judged

# --- The window opens: UPDATING, REBOOTING, logind's Reboot through polkit. ---
touch "$root/var/lib/fota-agent/window-open"
check "the agent reboots the gateway through logind" wait_for 120 went_down
e2e_stop
check "... into slot 1" test "$(boot_state PRIMARY)" = system1
bootloader

# --- Boot 3: the new system. ---
boot
check "slot 1 booted" test "$(boot_state CURRENT)" = system1
success() { outcome_of 2.0 | grep -q '^success'; }
check "the update to 2.0 succeeds after the reboot" wait_for 120 success
check "... slot 1 marked good" test "$(boot_state STATE_system1)" = good
check "... version 2.0 reported" wait_for 30 reported 2.0
check "... UPDATING then REBOOTING reported before the reboot" bash -c "nsenter -t $leader -m -u -i -n -p journalctl --no-pager -o cat -b -1 -u fota-agent | grep -E '^(UPDATING|REBOOTING)\$' | tr '\n' ' ' | grep -q '^UPDATING REBOOTING \$'"
outcomes() { # outcomes VERSION: every outcome of it in the journal of all boots
    ct journalctl --no-pager -o json -u fota-agent |
        jq -r --arg v "$1" 'select(.DEVICE_ID == "gateway" and .FIRMWARE_VERSION == $v and .OUTCOME != null) | .OUTCOME'
}
echo "e2e: outcomes of 2.0 over all boots: $(outcomes 2.0 | tr '\n' ' ')"
check "... exactly one outcome over all boots" test "$(outcomes 2.0 | wc -l)" = 1

# --- 3.0 into slot 0, whose new system is unhealthy. ---
touch "$root$gw/unhealthy"
offer 3.0
check "the agent reboots into 3.0" wait_for 120 went_down
e2e_stop
withdraw
check "... slot 0 primary" test "$(boot_state PRIMARY)" = system0
bootloader
boot
check "slot 0 booted" test "$(boot_state CURRENT)" = system0
check "the unhealthy system reboots back by itself" wait_for 120 went_down
e2e_stop
check "... slot 0 marked bad" test "$(boot_state STATE_system0)" = bad
check "... slot 1 primary again" test "$(boot_state PRIMARY)" = system1
bootloader
boot
failed_health() { outcome_of 3.0 | grep -q '^failed.*health check failed.*declared this system broken'; }
check "3.0 failed with the health check's reason" wait_for 60 failed_health
check "... version 2.0 reported again" wait_for 60 reported 2.0
echo "e2e: outcomes of 3.0 over all boots: $(outcomes 3.0 | tr '\n' ' ')"
check "... reported once" test "$(outcomes 3.0)" = failed

e2e_summary rauc-e2e
