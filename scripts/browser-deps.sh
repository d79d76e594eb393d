#!/usr/bin/env bash
# What the browser tests need: Debian's chromium (driven by playwright-core, which downloads
# no browser of its own) and the pinned node modules of tests/browser. Idempotent: installs
# only what is missing and says what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${CHROMIUM:-/usr/bin/chromium}
tests=tests/browser

# apt-get as root, or through sudo when it needs no password.
apt_install() {
  local run=()
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then
      run=(sudo -n)
    else
      echo "error: installing $* needs root or password-less sudo" >&2
      exit 1
    fi
  fi
  "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "node $(node --version) and npm $(npm --version 2>/dev/null) already present"
else
  echo "installing Debian's nodejs and npm"
  apt_install nodejs npm
fi
# playwright-core needs node 20 or later.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "error: node $(node --version) is too old for playwright-core; node 20 or later is needed" >&2
  exit 1
fi

if [ -x "$chromium" ]; then
  echo "chromium already present: $chromium ($("$chromium" --version 2>/dev/null || echo 'version unknown'))"
else
  echo "installing Debian's chromium"
  apt_install chromium
  if [ ! -x "$chromium" ]; then
    echo "error: $chromium still missing after installing chromium (set CHROMIUM to its path)" >&2
    exit 1
  fi
  echo "installed chromium: $("$chromium" --version 2>/dev/null || echo "$chromium")"
fi

# npm ci only when the lock file changed since the last install (a hash stamp in node_modules,
# so a fresh checkout's timestamps do not matter).
lock_hash=$(cat "$tests/package.json" "$tests/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$tests/node_modules/.installed-lock-sha256"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ]; then
  echo "$tests/node_modules up to date with package-lock.json"
else
  echo "npm ci in $tests"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core has no install hook today; this keeps
  # it that way should one appear. The browser is the system chromium.
  (cd "$tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  echo "$lock_hash" > "$stamp"
fi
