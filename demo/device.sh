#!/bin/sh
# A pretend device for the demo, driven by fota-agent's command handler.
# Its "flash" is a file; the first line of an image is "DEMO-SENSOR FIRMWARE <version>".
#   device.sh version          print the running version (1.0.0 from the factory)
#   device.sh update IMAGE     "flash" IMAGE, printing PROGRESS lines
set -eu
cd "$(dirname "$0")/.."
flash="${DEMO_FLASH:-target/demo-state/demo-sensor-1.flash}"
magic="DEMO-SENSOR FIRMWARE "

case "${1:-}" in
version)
    if [ -f "$flash" ]; then
        head -n 1 "$flash" | sed "s/^$magic//"
    else
        echo 1.0.0
    fi
    ;;
update)
    image="$2"
    case "$(head -n 1 "$image")" in
    "$magic"*) ;;
    *) echo "not a demo-sensor image: $image" >&2; exit 2 ;;
    esac
    echo "MESSAGE flashing $(wc -c < "$image") bytes into $flash"
    mkdir -p "$(dirname "$flash")"
    for pct in 0 20 40 60 80; do
        echo "PROGRESS $pct"
        sleep 0.2
    done
    cp "$image" "$flash.new"
    mv "$flash.new" "$flash"
    echo "PROGRESS 100"
    ;;
*)
    echo "usage: $0 version | update IMAGE" >&2
    exit 64
    ;;
esac
