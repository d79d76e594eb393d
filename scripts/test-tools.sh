#!/usr/bin/env bash
# Installs the Python tools that tests run (scripts/test-requirements.txt: aiosmtpd, the SMTP
# server of the notification service's tests; schemathesis, the API contract run against
# `tideway up`) into a virtual environment outside the clone, reinstalled only when that file
# or the Python version changes. Called by
# scripts/deps.sh; the tests find the environment at TIDEWAY_TEST_VENV (default
# ~/.cache/tideway-test-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${TIDEWAY_TEST_VENV:-$HOME/.cache/tideway-test-venv}
requirements=scripts/test-requirements.txt
python=${PYTHON:-python3}

log() { printf '[test-tools] %s\n' "$*"; }

command -v "$python" >/dev/null || { log "python3 is needed"; exit 1; }
stamp="$venv/.requirements-sha256"
want=$( { cat "$requirements"; "$python" --version; } | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  log "tools in $venv up to date with $requirements"
  exit 0
fi
log "installing $requirements into $venv"
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
"$venv/bin/python" -c 'import aiosmtpd' && log "aiosmtpd is importable"
"$venv/bin/st" --version && log "schemathesis is installed"
