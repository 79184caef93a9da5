#!/bin/sh
# Starts a grandchild, writes "<own pid> <grandchild pid>" into $1, then waits.
# $2: "term" exits on SIGTERM, "ignore" ignores SIGTERM (also in the grandchild),
# "plain" keeps the default.
case "$2" in
    term) trap 'echo "terminated by agent" >&2; exit 143' TERM ;;
    ignore) trap '' TERM ;;
esac
sleep 1000 &
echo "$$ $!" > "$1.tmp"
mv "$1.tmp" "$1"
echo "PROGRESS 1"
wait
