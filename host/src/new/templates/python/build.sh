#!/bin/sh
# Builds {{name}}.wasm, a wasi:http component, from app.py with
# componentize-py: the one on PATH, else one installed into .venv (with
# python3 and pip, from PyPI) on first use.
set -eu
cd "$(dirname "$0")"

COMPONENTIZE_PY_VERSION=0.25.1

die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

if command -v componentize-py >/dev/null 2>&1; then
    componentize_py=componentize-py
else
    componentize_py=.venv/bin/componentize-py
    if [ ! -x "$componentize_py" ]; then
        command -v python3 >/dev/null 2>&1 ||
            die "componentize-py $COMPONENTIZE_PY_VERSION is needed: put it on PATH (pip install componentize-py==$COMPONENTIZE_PY_VERSION), or install python3 (with its venv module) to let this script install it into .venv"
        printf 'build.sh: installing componentize-py %s into .venv\n' "$COMPONENTIZE_PY_VERSION" >&2
        python3 -m venv .venv ||
            die "python3 cannot make a venv (Debian: apt-get install python3-venv)"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
fi

"$componentize_py" -d wit -w function componentize app -o {{name}}.wasm
