#!/bin/sh
# Version command: a blank line, then the version with surrounding spaces, then noise.
echo
echo "   1.2.3-rc1  "
echo "second line is not the version"
