# Shared by the fetch scripts (sourced, not run): a directory under .cache/ that holds one pinned
# version of something downloaded, marked by a stamp file, and replaced as a whole.

# cache_is_current DIR STAMP VERSION: true when DIR already holds VERSION (its STAMP file says so).
cache_is_current() {
    local dir=$1 stamp=$2 version=$3
    [[ -f "$dir/$stamp" && "$(cat "$dir/$stamp")" == "$version" ]]
}

# exit_if_current DIR STAMP VERSION WHAT: ends the calling script (status 0), saying so, when DIR
# already holds VERSION of WHAT; the fetch scripts' skip-when-present check.
exit_if_current() {
    local dir=$1 stamp=$2 version=$3 what=$4
    if cache_is_current "$dir" "$stamp" "$version"; then
        echo "$what $version already in $dir"
        exit 0
    fi
}

# require_tools WHO TOOL...: exits with a message naming WHO when a TOOL is not on PATH.
require_tools() {
    local who=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$who: '$tool' is required" >&2; exit 1; }
    done
}

# cache_install SRC DIR STAMP VERSION: moves the unpacked tree SRC into place as DIR, stamped
# with VERSION. The old DIR is replaced as a whole, so an interrupted earlier run never leaves a
# mixed tree behind.
cache_install() {
    local src=$1 dir=$2 stamp=$3 version=$4
    rm -rf "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    mv "$src" "$dir.tmp"
    echo "$version" > "$dir.tmp/$stamp"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
}
