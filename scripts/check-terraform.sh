#!/usr/bin/env bash
# Offline validation of infra/terraform (and a static scan of the Dockerfile).
#
#   1. terraform (or tofu), when on PATH: `fmt -check`, which needs no provider; then
#      `init -backend=false` and `validate`, which need the hashicorp/aws provider from
#      its registry. These machines cannot reach that registry, so init fails fast and
#      validate is reported as skipped; on a machine that can, both run for real.
#   2. checkov, in its own virtualenv under .tools/checkov (it pins many packages, so
#      it stays out of the project venv), with --skip-download: no network at scan
#      time. Every finding is either fixed or skipped inline with a reason
#      (#checkov:skip=CKV_...:why), so any failed check fails this script.
#      If checkov cannot be installed within CHECKOV_INSTALL_TIMEOUT seconds (120), the
#      scan is reported as skipped.
# The HCL itself is also parsed and compared with the store's table definition by
# tests/integration/test_deploy_artifacts.py (python-hcl2, part of `pytest`).
# Exit status: non-zero only for a real finding (fmt diff, validate error, checkov
# failure); anything that cannot run here prints "skipped: <reason>".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TF_DIR="${ROOT}/infra/terraform"
CHECKOV_VENV="${ROOT}/.tools/checkov"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
CHECKOV_INSTALL_TIMEOUT="${CHECKOV_INSTALL_TIMEOUT:-120}"
status=0

say() { echo "check-terraform: $*"; }

# --- 1. terraform / opentofu --------------------------------------------------------
tf=""
for candidate in terraform tofu; do
    if command -v "${candidate}" >/dev/null 2>&1; then tf="${candidate}"; break; fi
done
if [[ -z "${tf}" ]]; then
    say "skipped: fmt/init/validate: no terraform or tofu binary on PATH (none is installable from the registries these machines reach)"
else
    # A missing ~/.terraformrc named by TF_CLI_CONFIG_FILE only produces warnings.
    if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "${TF_CLI_CONFIG_FILE}" ]]; then
        unset TF_CLI_CONFIG_FILE
    fi
    export TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
    say "$("${tf}" version | head -n 1)"
    if "${tf}" -chdir="${TF_DIR}" fmt -check -recursive -diff; then
        say "fmt: clean"
    else
        say "fmt: FAILED (run: ${tf} -chdir=infra/terraform fmt -recursive)"
        status=1
    fi
    data_dir="$(mktemp -d)"
    trap 'rm -rf "${data_dir}"' EXIT
    # With registry access, init writes infra/terraform/.terraform.lock.hcl: commit it.
    if TF_DATA_DIR="${data_dir}" timeout 120 "${tf}" -chdir="${TF_DIR}" init -backend=false \
            -input=false -no-color >"${data_dir}/init.log" 2>&1; then
        if TF_DATA_DIR="${data_dir}" "${tf}" -chdir="${TF_DIR}" validate -no-color; then
            say "validate: ok"
        else
            say "validate: FAILED"
            status=1
        fi
    elif grep -qiE "no such host|dial tcp|i/o timeout|connection refused|could not connect|Failed to query available provider packages" "${data_dir}/init.log"; then
        say "skipped: init/validate: the hashicorp/aws provider cannot be downloaded here ($(grep -m1 -oiE 'no such host|connection refused|i/o timeout|dial tcp' "${data_dir}/init.log" | head -n 1 || true))"
    else
        cat "${data_dir}/init.log"
        say "init: FAILED"
        status=1
    fi
fi

# --- 2. checkov -----------------------------------------------------------------------
checkov="${CHECKOV_VENV}/bin/checkov"
mkdir -p "${ROOT}/.tools"
if [[ ! -x "${checkov}" || "$("${checkov}" --version 2>/dev/null)" != "${CHECKOV_VERSION}" ]]; then
    say "installing checkov ${CHECKOV_VERSION} into .tools/checkov (once; ~30 s)"
    rm -rf "${CHECKOV_VENV}"
    if ! { python3 -m venv "${CHECKOV_VENV}" \
            && timeout "${CHECKOV_INSTALL_TIMEOUT}" "${CHECKOV_VENV}/bin/pip" install --quiet \
                --disable-pip-version-check "checkov==${CHECKOV_VERSION}"; } \
            >"${ROOT}/.tools/checkov-install.log" 2>&1; then
        tail -n 3 "${ROOT}/.tools/checkov-install.log" || true
        rm -rf "${CHECKOV_VENV}"
        say "skipped: checkov: could not be installed within ${CHECKOV_INSTALL_TIMEOUT}s (log: .tools/checkov-install.log)"
        exit "${status}"
    fi
fi

scan() {  # scan <label> <checkov args...>
    local label="$1"; shift
    if "${checkov}" --skip-download --quiet --compact "$@"; then
        say "checkov ${label}: no failed checks"
    else
        say "checkov ${label}: FAILED"
        status=1
    fi
}
export BC_SKIP_MAPPING=TRUE  # no download of the guideline mapping
scan terraform -d "${TF_DIR}" --framework terraform
scan dockerfile -f "${ROOT}/Dockerfile" --framework dockerfile
exit "${status}"
