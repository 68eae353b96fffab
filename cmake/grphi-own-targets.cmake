# Flags for grphi's own executables (tests, benchmarks, examples, tools, fuzzers); never for consumers.

# Apply the GRPHI_WERROR / GRPHI_SANITIZE / GRPHI_NATIVE / GRPHI_OPENMP choices to one of our targets.
function(grphi_apply_build_options target)
  if(GRPHI_WERROR)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
  endif()
  if(GRPHI_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all
                                              -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all)
  endif()
  if(GRPHI_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  # GCC 12 warns inside its own AVX-512 headers (self-initialised _mm512_undefined_* operands, GCC bug
  # 105593) wherever AVX-512 intrinsics are inlined: in every build, since the run-time dispatched
  # kernels compile AVX-512 code without -march=native too.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized -Wno-uninitialized)
  endif()
  if(GRPHI_OPENMP)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
  endif()
endfunction()

# One executable per name in a list: <prefix><name>.cpp in the current source directory, or
# <folder>/<prefix><name>.cpp for a name written <folder>/<name> (tests/ and bench/ mirror include/grphi/);
# the folder is only where the source lives: targets, outputs and test names use <name> alone.
# A listed source that does not exist yet is not fatal (so one engineer's list entry cannot block
# everyone's configure): CMake warns, and when testing is on a ctest test stands in for it and fails,
# named <name> for a test and missing_<kind>_<name> otherwise.
function(grphi_add_executables)
  cmake_parse_arguments(ARG "" "KIND;SOURCE_PREFIX;TARGET_PREFIX;TARGET_SUFFIX;OUTPUT_PREFIX;OUT_TARGETS"
                        "NAMES;LIBRARIES" ${ARGN})
  set(targets)
  foreach(entry IN LISTS ARG_NAMES)
    get_filename_component(name "${entry}" NAME)
    get_filename_component(folder "${entry}" DIRECTORY)
    if(folder)
      set(folder "${folder}/")
    endif()
    set(source "${CMAKE_CURRENT_SOURCE_DIR}/${folder}${ARG_SOURCE_PREFIX}${name}.cpp")
    if(NOT EXISTS "${source}")
      set(problem "grphi: ${ARG_KIND} '${name}' is listed in ${CMAKE_CURRENT_LIST_FILE} but ${source} does not exist")
      message(WARNING "${problem}")
      if(GRPHI_BUILD_TESTS)
        if(ARG_KIND STREQUAL "test")
          set(stand_in "${name}")
        else()
          set(stand_in "missing_${ARG_KIND}_${name}")
        endif()
        add_test(NAME "${stand_in}"
                 COMMAND "${CMAKE_COMMAND}" "-DMESSAGE=${problem}" -P "${PROJECT_SOURCE_DIR}/cmake/grphi-fail.cmake")
      endif()
      continue()
    endif()
    set(target "${ARG_TARGET_PREFIX}${name}${ARG_TARGET_SUFFIX}")
    add_executable(${target} "${source}")
    set_target_properties(${target} PROPERTIES OUTPUT_NAME "${ARG_OUTPUT_PREFIX}${name}")
    target_link_libraries(${target} PRIVATE grphi::grphi ${ARG_LIBRARIES})
    grphi_apply_build_options(${target})
    list(APPEND targets ${target})
  endforeach()
  if(ARG_OUT_TARGETS)
    set(${ARG_OUT_TARGETS} "${targets}" PARENT_SCOPE)
  endif()
endfunction()
