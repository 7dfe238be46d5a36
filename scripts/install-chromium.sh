#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser tests, only when it is missing.
# Playwright cannot download its own browser here, so the tests drive /usr/bin/chromium.
# Never fails the build: when chromium cannot be installed, it says why and exits 0,
# and tests/integration/test_dashboard.py skips with that reason.
set -u

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

skip() {
    echo "install-chromium: $1; the browser tests will skip" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || skip "not root and no passwordless sudo"
    SUDO="sudo -n"
fi

echo "install-chromium: installing Debian chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || skip "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
    || skip "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || skip "the chromium package did not provide $CHROMIUM"
echo "install-chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM installed")" >&2
exit 0
