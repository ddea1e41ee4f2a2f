# Shared by the set-up scripts that build a Python virtual environment from pinned wheels
# (sourced, not run): model-corpus and stablehlo.
#
# Wheels come from PyPI only and are kept in a wheel cache outside the repository,
# $TESSERA_WHEEL_CACHE or else ~/.cache/tessera/wheels (pip's own HTTP cache does not keep them:
# the index here answers with headers that forbid caching), so a fresh clone on the same machine
# installs without downloading again. Nothing at test time touches the network.

# venv_require_python WHO: exits naming WHO without python3; installs Debian's python3-venv
# (which holds venv's pip bootstrap) when it is missing.
venv_require_python() {
    local who=$1
    command -v python3 >/dev/null || { echo "$who: python3 is required" >&2; exit 1; }
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        local sudo_cmd=()
        [[ "$(id -u)" -ne 0 ]] && sudo_cmd=(sudo)
        echo "$who: installing python3-venv"
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
}

# venv_install_pinned WHO VENV REQUIREMENTS: creates VENV and installs exactly the wheels that
# REQUIREMENTS pins (--no-deps: the file pins the whole environment), from the wheel cache
# alone when it has every one (pip resolves all before it installs any, so a miss leaves the
# venv empty), else after downloading what is missing. PIP_FIND_LINKS is cleared so that every
# wheel comes from the package index. --no-compile: Python writes the bytecode of what it
# imports on first use; compiling whole packages up front adds minutes nobody needs.
venv_install_pinned() {
    local who=$1 venv=$2 requirements=$3
    local wheels="${TESSERA_WHEEL_CACHE:-$HOME/.cache/tessera/wheels}"
    mkdir -p "$wheels"
    python3 -m venv "$venv"
    if ! PIP_FIND_LINKS= "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --no-index --find-links "$wheels" --no-compile -r "$requirements" 2>/dev/null; then
        echo "$who: downloading the pinned wheels into $wheels"
        PIP_FIND_LINKS= "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$wheels" -r "$requirements"
        PIP_FIND_LINKS= "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
            --no-index --find-links "$wheels" --no-compile -r "$requirements"
    fi
}
