#!/usr/bin/env bash
# Sets up everything `make app` / `make test` need. Idempotent, and a no-op (well under a second) once done.
#   scripts/setup.sh app    the virtual environment with the Python packages
#   scripts/setup.sh test   the same, plus Debian's chromium (browser tests) and postgresql (search-storage tests)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-app}
venv=.venv
stamp=$venv/.resnet_lab-installed

# Prefer 3.11 (what CI runs); any python3 >= 3.10 works.
python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with $("$python_bin" --version)"
  "$python_bin" -m venv "$venv"
fi

# Re-install only when what pip would install changed: hash the inputs into a stamp file.
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: installing Python packages (first run: a few minutes, torch is large)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r requirements.txt
  # --no-deps: requirements.txt already holds every dependency; this only links the package into the venv.
  "$venv/bin/python" -m pip install --quiet -e . --no-deps
  echo "$want" > "$stamp"
fi

if [ "$mode" = "test" ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  compgen -G "/usr/lib/postgresql/*/bin/postgres" > /dev/null || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    # env inside sudo: sudo drops the caller's environment.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-liberation
  fi
fi
