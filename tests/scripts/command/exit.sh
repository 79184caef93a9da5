#!/bin/sh
# Exits with status $1.
echo "MESSAGE checking device"
exit "$1"
