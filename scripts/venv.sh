# Shared by scripts/*: create .venv and install the project into it when pyproject.toml has changed.
ensure_venv() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "musrec needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
        exit 1
    fi
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    local spec="." hash stamp installed
    [ -n "$extras" ] && spec=".[$extras]"
    hash="$(sha256sum < pyproject.toml | cut -c1-16)"
    stamp="$hash-$extras"
    installed="$(cat .venv/.musrec-installed 2>/dev/null || true)"
    # An install with extras also satisfies a plain one.
    if [ "$installed" != "$stamp" ] && ! { [ -z "$extras" ] && [ "${installed%%-*}" = "$hash" ]; }; then
        echo "installing musrec and its dependencies into .venv (first run takes a few minutes) ..." >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
        echo "$stamp" > .venv/.musrec-installed
    fi
}
