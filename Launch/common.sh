# Shared by the Launch/ scripts: find the toolchain, install what is missing, mpirun as root.
# Sourced, not run.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEBIAN_PACKAGES=(libopenmpi-dev openmpi-bin libopenblas-dev libdnnl-dev pkg-config)

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The Swift toolchain: on PATH, or where the Swift Debian images put it.
ensure_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        for dir in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
            [ -x "$dir/swift" ] && export PATH="$dir:$PATH" && break
        done
    fi
    command -v swift >/dev/null 2>&1 || die "no Swift toolchain found (need Swift 6; install it from swift.org and put it on PATH)"
}

# OpenMPI, OpenBLAS and oneDNN from Debian, installed when any piece is missing.
ensure_packages() {
    local missing=()
    for package in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "missing Debian packages: ${missing[*]} (run: sudo apt-get update && sudo apt-get install -y ${missing[*]})"
    fi
    say "installing ${missing[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# mpirun refuses root unless told; tests and scripts on this kind of machine run as root.
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# Builds moe in CONFIGURATION (debug or release) if needed and prints the binary's path.
build_moe() {
    local configuration="$1"
    (cd "$REPO_ROOT" && swift build -c "$configuration" --product moe >&2) || die "swift build -c $configuration failed"
    printf '%s\n' "$(cd "$REPO_ROOT" && swift build -c "$configuration" --show-bin-path)/moe"
}
