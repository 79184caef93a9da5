#!/bin/sh
# RAUC's `bootloader=custom` backend for tests/rauc.rs: the boot state lives in
# the file $FOTA_TEST_BOOT_STATE (PRIMARY=, CURRENT=, STATE_<bootname>=good|bad),
# as a real bootloader keeps it in its environment. Making a slot primary also
# makes it bootable again, as barebox and U-Boot do.
set -eu
S="$FOTA_TEST_BOOT_STATE"
put() { sed -i "s/^$1=.*/$1=$2/" "$S"; }
get() { sed -n "s/^$1=//p" "$S"; }
case "$1" in
get-primary)
    p=$(get PRIMARY)
    if [ "$(get "STATE_$p")" = good ]; then echo "$p"; fi
    ;;
set-primary) put PRIMARY "$2"; put "STATE_$2" good ;;
get-state) get "STATE_$2" ;;
set-state) put "STATE_$2" "$3" ;;
get-current) get CURRENT ;;
*) echo "unknown command $1" >&2; exit 1 ;;
esac
