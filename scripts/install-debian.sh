#!/usr/bin/env bash
# Installs Debian packages that some tests run for real, only those whose program is
# missing, in one apt-get call:
#   bash scripts/install-debian.sh PACKAGE=PROGRAM [PACKAGE=PROGRAM ...] [-- EXTRA ...]
# e.g. chromium=/usr/bin/chromium (the dashboard's browser tests: Playwright cannot
# download its own browser here) and redis-server=/usr/bin/redis-server (the shared
# rate-limit storage test). EXTRA packages go along with any install (fonts).
# Never fails the build: when a package cannot be installed, it says why and exits 0,
# and the tests that need its program skip with that reason.
set -u

wanted=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        *=*) [ -x "${1#*=}" ] || wanted+=("$1") ;;
        *) echo "install-debian: expected PACKAGE=PROGRAM, got '$1'" >&2; exit 2 ;;
    esac
    shift
done
[ ${#wanted[@]} -eq 0 ] && exit 0

packages=("${wanted[@]%%=*}")
skip() {
    echo "install-debian: $1; the tests that need ${packages[*]} will skip" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || skip "not root and no passwordless sudo"
    SUDO="sudo -n"
fi

echo "install-debian: installing ${packages[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || skip "apt-get update failed"
apt_install() { $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
if ! apt_install "${packages[@]}" "${extra[@]}"; then  # one bad package must not stop the rest
    for package in "${packages[@]}"; do
        apt_install "$package" "${extra[@]}" || echo "install-debian: $package failed to install" >&2
    done
fi
for pair in "${wanted[@]}"; do
    program=${pair#*=}
    if [ -x "$program" ]; then
        echo "install-debian: $("$program" --version 2>/dev/null | head -n 1 || echo "$program")" >&2
    else
        echo "install-debian: the ${pair%%=*} package did not provide $program" >&2
    fi
done
exit 0
