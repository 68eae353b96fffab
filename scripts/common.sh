# Shared helpers of scripts/test, scripts/demo and scripts/bench (sourced, not run).

# Everything the builds, tests, demo and benchmarks need, as Debian 12 packages.
GRPHI_DEBIAN_PACKAGES=(
    g++ clang cmake ninja-build meson pkg-config
    libeigen3-dev libxsimd-dev doctest-dev libbenchmark-dev
    zlib1g-dev libzstd-dev libclang-rt-14-dev libomp-dev
    dataset-fashion-mnist
)

# Parallel build jobs: the machines this runs on have 2 cores (override with GRPHI_JOBS).
GRPHI_JOBS=${GRPHI_JOBS:-2}

# Lists the packages of GRPHI_DEBIAN_PACKAGES that are not installed (one dpkg-query call).
missing_packages() {
    local package status
    for package in "${GRPHI_DEBIAN_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) || status=""
        [[ $status == "install ok installed" ]] || echo "$package"
    done
}

# Installs the Debian packages when any is missing; quick (no apt) when all are present.
ensure_deps() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "grphi: dpkg-query not found: this script expects Debian 12; install the equivalent of:" >&2
        echo "  ${GRPHI_DEBIAN_PACKAGES[*]}" >&2
        return 1
    fi
    local missing
    missing=$(missing_packages)
    [[ -z $missing ]] && return 0

    echo "grphi: installing missing Debian packages:" $missing
    local -a as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            as_root=(sudo)
        else
            echo "grphi: not root and no sudo: as root, run" >&2
            echo "  apt-get update && apt-get install -y --no-install-recommends ${GRPHI_DEBIAN_PACKAGES[*]}" >&2
            return 1
        fi
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${GRPHI_DEBIAN_PACKAGES[@]}" || {
        echo "grphi: apt-get failed to install the dependencies" >&2
        return 1
    }
    missing=$(missing_packages)
    if [[ -n $missing ]]; then
        echo "grphi: still missing after apt-get:" $missing >&2
        return 1
    fi
}

# Prints a stage banner.
banner() {
    echo
    echo "=================================================================="
    echo "== $*"
    echo "=================================================================="
}

# Seconds since the epoch (for stage timings).
now_seconds() { date +%s; }
