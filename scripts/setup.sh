#!/usr/bin/env bash
# One-command set-up for atrisk on Debian/Ubuntu.
#   - installs the Debian packages atrisk needs (ffmpeg, espeak-ng, sox) when missing
#   - creates .venv/ in the repository root with atrisk and every Python dependency
# Idempotent: a second run only checks, and finishes in seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need=()
for pkg in ffmpeg espeak-ng sox libsndfile1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "[setup] atrisk needs Python 3.11 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$py" --version)"
  "$py" -m venv .venv
fi

# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.atrisk-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/atrisk ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] installing atrisk and its dependencies into .venv (first time: a few minutes)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
echo "$want" > "$stamp"
echo "[setup] done: .venv/bin/atrisk is ready"
