#!/bin/sh
# Fails with status $1 after two stderr lines (the last one is the reason).
echo "some progress on stdout"
echo "first problem" >&2
echo "device not responding" >&2
echo "" >&2
exit "${1:-3}"
