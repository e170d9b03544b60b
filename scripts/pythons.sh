# Make every Python of the test matrix (3.10-3.13) findable by hatch, which cannot download
# interpreters without general network access. With pyenv, expose each installed version.
if command -v pyenv >/dev/null 2>&1 && [ -z "${PSYCOGREEN_NO_PYENV:-}" ]; then
  versions=()
  for minor in 3.11 3.10 3.12 3.13; do
    v=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n1 || true)
    [ -n "$v" ] && versions+=("$v")
  done
  if [ ${#versions[@]} -gt 0 ]; then
    PYENV_VERSION=$(IFS=:; echo "${versions[*]}")
    export PYENV_VERSION
  fi
fi
for minor in 3.10 3.11 3.12 3.13; do
  if ! python"$minor" --version >/dev/null 2>&1; then
    echo "python$minor not found: the test matrix needs Python 3.10 to 3.13 on PATH" >&2
    exit 1
  fi
done
