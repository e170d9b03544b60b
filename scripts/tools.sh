# Sourced by scripts/demo, scripts/hatch and scripts/test-all (bash).
#
# find_hatch: sets HATCH to a hatch of at least HATCH_MIN: the one on PATH, else the one in .tools/
# (a virtual environment of this checkout, git-ignored), else it installs hatch there first. It
# never installs into a system Python: Debian's and Ubuntu's refuse it (PEP 668,
# "externally-managed-environment"), and the tools venv needs no root.
#
# find_pythons: with pyenv, exposes its newest 3.10, 3.11, 3.12 and 3.13 (hatch cannot download
# interpreters without general network access, it finds them on PATH); then sets PYTHONS_FOUND
# and PYTHONS_MISSING to the matrix's versions that are, and are not, on PATH.

PSYCOGREEN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HATCH_MIN=1.18
MATRIX_PYTHONS=(3.10 3.11 3.12 3.13)
TOOLS_DIR="$PSYCOGREEN_ROOT/.tools"

say() { printf '%s\n' "$*" >&2; }

in_ci() {
  case "${CI:-}" in 1 | [Tt]rue | TRUE | [Yy]es) return 0 ;; *) return 1 ;; esac
}

# hatch_ok HATCH: it runs and is at least HATCH_MIN.
hatch_ok() {
  local version lowest
  version=$("$1" --version 2>/dev/null | sed -n 's/^Hatch, version \([0-9][0-9.]*\).*/\1/p') \
    || return 1
  lowest=$(printf '%s\n%s\n' "$HATCH_MIN" "$version" | sort -V | head -n1)
  [ -n "$version" ] && [ "$lowest" = "$HATCH_MIN" ]
}

# python_ok PYTHON: it runs and is 3.10 or newer (what the packages and the demo need).
python_ok() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

tools_python() {
  local candidate
  local candidates=(python3 python3.13 python3.12 python3.11 python3.10 /usr/bin/python3)
  if [ -n "${PSYCOGREEN_TOOLS_PYTHON:-}" ]; then
    candidates=("$PSYCOGREEN_TOOLS_PYTHON" "${candidates[@]}")
  fi
  for candidate in "${candidates[@]}"; do
    if python_ok "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# A virtual environment with pip at $TOOLS_DIR, made with $1. Debian and Ubuntu split venv's pip
# (ensurepip) off into python3-venv: without it, the environment is made without pip, and pip is
# run from the wheel those systems keep in /usr/share/python-wheels, or from the system's pip.
make_tools_venv() {
  local py=$1 wheel
  rm -rf "$TOOLS_DIR"
  if "$py" -m venv "$TOOLS_DIR" >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$TOOLS_DIR"
  if ! "$py" -m venv --without-pip "$TOOLS_DIR" >/dev/null; then
    say "error: $py cannot make a virtual environment (its venv module is missing);"
    say "  install it (Debian/Ubuntu: apt-get install python3-venv), or install hatch yourself."
    return 1
  fi
  for wheel in /usr/share/python-wheels/pip-*.whl; do
    if [ -f "$wheel" ] && "$TOOLS_DIR/bin/python" "$wheel/pip" install -q pip >/dev/null; then
      return 0
    fi
  done
  if "$py" -m pip --version >/dev/null 2>&1 \
    && "$py" -m pip --python "$TOOLS_DIR/bin/python" install -q pip >/dev/null; then
    return 0
  fi
  rm -rf "$TOOLS_DIR"
  say "error: $py has no pip to install hatch with, and its venv module cannot provide one;"
  say "  install python3-venv (Debian/Ubuntu: apt-get install python3-venv), or install hatch"
  say "  yourself."
  return 1
}

find_hatch() {
  if [ -n "${HATCH:-}" ] && hatch_ok "$HATCH"; then
    return 0
  fi
  if command -v hatch >/dev/null 2>&1 && hatch_ok hatch; then
    HATCH=$(command -v hatch)
    return 0
  fi
  # .complete is written last: a half-made .tools/ (an interrupted install) is made again.
  if [ -f "$TOOLS_DIR/.complete" ] && hatch_ok "$TOOLS_DIR/bin/hatch"; then
    HATCH="$TOOLS_DIR/bin/hatch"
    return 0
  fi
  local py
  if ! py=$(tools_python); then
    say "error: no Python 3.10 or newer on PATH to install hatch with; install one"
    say "  (Debian/Ubuntu: apt-get install python3 python3-venv), or install hatch yourself."
    return 1
  fi
  local version
  version=$("$py" -c 'import platform; print(platform.python_version())')
  say "hatch >= $HATCH_MIN not found: installing it into .tools/ (a virtual environment of this"
  say "checkout, git-ignored) with $py ($version)"
  make_tools_venv "$py" || return 1
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$TOOLS_DIR/bin/python" -m pip install -q "hatch>=$HATCH_MIN"; then
    say "error: pip could not install hatch into .tools/ (above: why); fix that and run this again."
    return 1
  fi
  touch "$TOOLS_DIR/.complete"
  HATCH="$TOOLS_DIR/bin/hatch"
  say "hatch $("$HATCH" --version | sed 's/^Hatch, version //') is at .tools/bin/hatch"
}

find_pythons() {
  if command -v pyenv >/dev/null 2>&1 && [ -z "${PSYCOGREEN_NO_PYENV:-}" ]; then
    local versions=() minor v
    # 3.11 first: it is then the `python` and `python3` of pyenv's shims.
    for minor in 3.11 3.10 3.12 3.13; do
      v=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V \
        | tail -n1 || true)
      [ -n "$v" ] && versions+=("$v")
    done
    if [ ${#versions[@]} -gt 0 ]; then
      PYENV_VERSION=$(IFS=:; echo "${versions[*]}")
      export PYENV_VERSION
    fi
  fi
  PYTHONS_FOUND=()
  PYTHONS_MISSING=()
  local minor
  for minor in "${MATRIX_PYTHONS[@]}"; do
    if python"$minor" -c 'import sys' >/dev/null 2>&1; then
      PYTHONS_FOUND+=("$minor")
    else
      PYTHONS_MISSING+=("$minor")
    fi
  done
}
