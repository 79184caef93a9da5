#!/usr/bin/env bash
# Builds the Debian package: target/debian/fota-agent_<version>_<arch>.deb.
# Needs debhelper and dpkg-dev (installed here when missing) and the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for pkg in debhelper dpkg-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --locked
target/release/fota-agent-generate completions target/completions
# -d: the binary comes from the project's toolchain, not Debian build-deps.
dpkg-buildpackage -b -us -uc -d >/dev/null
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
mkdir -p target/debian
mv "../fota-agent_${version}_${arch}.deb" target/debian/
rm -f "../fota-agent-dbgsym_${version}_${arch}.deb" "../fota-agent_${version}_${arch}.buildinfo" "../fota-agent_${version}_${arch}.changes"
echo "target/debian/fota-agent_${version}_${arch}.deb"
