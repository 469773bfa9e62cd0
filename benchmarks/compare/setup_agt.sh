#!/usr/bin/env bash
# Create (idempotently) the isolated venv holding Microsoft's Agent Governance Toolkit for the
# comparison benchmark. Usage: setup_agt.sh [VENV_DIR]   (default: <repo root>/.venv-agt)
#
# `agent-governance-toolkit` 4.1.0 on its own installs only `agent_compliance`; the policy
# evaluator (agent_os) and the audit log (agentmesh) live in `agent-governance-toolkit-core`,
# which the `[core]` extra pulls in (<5.0). Both are pinned so reruns measure the same code.
set -euo pipefail

AGT_VERSION="4.1.0"
AGT_CORE_VERSION="4.1.0"
SPEC=("agent-governance-toolkit[core]==${AGT_VERSION}" "agent-governance-toolkit-core==${AGT_CORE_VERSION}")

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-agt}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.agt-installed"
WANT="${SPEC[*]} python=$("$PYTHON" -c 'import platform; print(platform.python_version())')"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi

LOG="$(mktemp "${TMPDIR:-/tmp}/setup-agt.XXXXXX.log")"
if ! {
    "$PYTHON" -m venv "$VENV" &&
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${SPEC[@]}" &&
        "$VENV/bin/python" -W ignore -c 'import agent_os.policies, agentmesh.governance.audit'
} >"$LOG" 2>&1; then
    echo "setup_agt.sh: could not install ${SPEC[*]} into $VENV (log: $LOG)" >&2
    exit 1
fi
rm -f "$LOG"
printf '%s\n' "$WANT" >"$STAMP"
echo "setup_agt.sh: $VENV ready (${SPEC[*]})" >&2
