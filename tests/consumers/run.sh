#!/usr/bin/env bash
# Consumer tests: each way a user can take grphi in builds and runs tests/consumers/main.cpp.
#   usage: tests/consumers/run.sh WORK_DIR      (WORK_DIR is deleted and recreated)
# Prints "PASS <check>" / "FAIL <check>" per check and ends with "consumers: N passed, N failed";
# exits non-zero if any check failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:?usage: tests/consumers/run.sh WORK_DIR}
jobs=${GRPHI_JOBS:-2}
export CXX=${CXX:-g++}

rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
cmake_prefix="$work/cmake-prefix"
meson_prefix="$work/meson-prefix"
expected_output="grphi consumer ok (base phi)"

passed=0
failed=0

# Runs one check with its output in WORK_DIR/<name>.log; shows the log's tail when it fails.
check() {
    local name=$1
    shift
    echo "---- consumer check: $name"
    if "$@" >"$work/$name.log" 2>&1; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name (log: $work/$name.log)"
        tail -n 40 "$work/$name.log" | sed 's/^/    /'
    fi
}

# Runs a built consumer and checks what it printed.
run_consumer() {
    local output
    output=$("$1") || { echo "consumer exited with status $?: $output"; return 1; }
    echo "$output"
    [[ $output == "$expected_output" ]] || { echo "expected: $expected_output"; return 1; }
}

# (1) install with CMake into a prefix, then find_package(grphi CONFIG) from a separate project.
cmake_install() {
    cmake -S "$repo" -B "$work/grphi-cmake-build" -G Ninja -DCMAKE_INSTALL_PREFIX="$cmake_prefix" \
        -DGRPHI_BUILD_TESTS=OFF -DGRPHI_BUILD_BENCH=OFF -DGRPHI_BUILD_EXAMPLES=OFF \
        -DGRPHI_BUILD_TOOLS=OFF -DGRPHI_BUILD_FUZZ=OFF &&
    cmake --build "$work/grphi-cmake-build" -j "$jobs" &&
    cmake --install "$work/grphi-cmake-build" &&
    test -f "$cmake_prefix/include/grphi/core/base.hpp" &&
    test -f "$cmake_prefix/share/cmake/grphi/grphiConfig.cmake" &&
    test -f "$cmake_prefix/share/cmake/grphi/grphiConfigVersion.cmake" &&
    test -f "$cmake_prefix/share/pkgconfig/grphi.pc" &&
    cmake -S "$here/cmake_install" -B "$work/cmake_install" -G Ninja -DCMAKE_PREFIX_PATH="$cmake_prefix" &&
    cmake --build "$work/cmake_install" -j "$jobs" &&
    run_consumer "$work/cmake_install/consumer"
}

# (2) vendored with add_subdirectory: grphi's tests etc. must stay off.
cmake_subdirectory() {
    cmake -S "$here/cmake_subdirectory" -B "$work/cmake_subdirectory" -G Ninja -DGRPHI_SOURCE_DIR="$repo" &&
    cmake --build "$work/cmake_subdirectory" -j "$jobs" &&
    run_consumer "$work/cmake_subdirectory/consumer"
}

# (3) Meson subproject: subprojects/grphi links to this repository; dependency('grphi') resolves to it.
meson_subproject() {
    local project="$work/meson_subproject"
    mkdir -p "$project/subprojects" &&
    cp "$here/meson_subproject/meson.build" "$here/main.cpp" "$project/" &&
    ln -s "$repo" "$project/subprojects/grphi" &&
    meson setup "$project/build" "$project" --force-fallback-for=grphi &&
    meson compile -C "$project/build" -j "$jobs" &&
    if grep -q "test_options" "$project/build/build.ninja"; then
        echo "grphi's tests were built inside a consumer"; return 1
    fi &&
    run_consumer "$project/build/consumer"
}

# (4) pkg-config on the CMake-installed grphi.pc (Requires: eigen3 xsimd).
pkgconfig_cmake_install() {
    local flags
    test "$(PKG_CONFIG_PATH="$cmake_prefix/share/pkgconfig" pkg-config --modversion grphi)" = 0.1.0 &&
    flags=$(PKG_CONFIG_PATH="$cmake_prefix/share/pkgconfig" pkg-config --cflags grphi) &&
    echo "pkg-config --cflags grphi: $flags" &&
    # shellcheck disable=SC2086  # the flags are a word list
    "$CXX" -std=c++17 -Wall -Wextra -Werror $flags "$here/main.cpp" -o "$work/pkgconfig_consumer" &&
    run_consumer "$work/pkgconfig_consumer"
}

# (5) Meson install + its generated grphi.pc; both build systems must install the same headers.
meson_install() {
    local flags
    meson setup "$work/grphi-meson-build" "$repo" --prefix="$meson_prefix" \
        -Dtests=false -Dbench=false -Dexamples=false -Dtools=false -Dfuzz=false &&
    meson install -C "$work/grphi-meson-build" &&
    diff <(cd "$cmake_prefix/include" && find . -type f | sort) \
         <(cd "$meson_prefix/include" && find . -type f | sort) &&
    flags=$(PKG_CONFIG_PATH="$meson_prefix/share/pkgconfig" pkg-config --cflags grphi) &&
    echo "pkg-config --cflags grphi: $flags" &&
    # shellcheck disable=SC2086
    "$CXX" -std=c++17 -Wall -Wextra -Werror $flags "$here/main.cpp" -o "$work/meson_install_consumer" &&
    run_consumer "$work/meson_install_consumer"
}

check cmake_install cmake_install
check cmake_subdirectory cmake_subdirectory
check meson_subproject meson_subproject
check pkgconfig_cmake_install pkgconfig_cmake_install
check meson_install meson_install

echo "consumers: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
