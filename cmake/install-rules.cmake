# Install rules: headers, the exported grphi::grphi target, the CMake package config and grphi.pc.
# Everything is architecture independent (header-only), so the config and .pc go under share/.
include(CMakePackageConfigHelpers)
include(GNUInstallDirs)

set(GRPHI_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_DATADIR}/cmake/grphi" CACHE STRING
    "Where grphiConfig.cmake is installed, relative to the prefix")
set(GRPHI_PKGCONFIG_INSTALL_DIR "${CMAKE_INSTALL_DATADIR}/pkgconfig" CACHE STRING
    "Where grphi.pc is installed, relative to the prefix")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/grphi"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT grphi_development
        FILES_MATCHING PATTERN "*.hpp")

install(TARGETS grphi EXPORT grphiTargets)
install(EXPORT grphiTargets
        NAMESPACE grphi::
        DESTINATION "${GRPHI_CMAKE_INSTALL_DIR}"
        COMPONENT grphi_development)

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/grphiConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/grphiConfig.cmake"
  INSTALL_DESTINATION "${GRPHI_CMAKE_INSTALL_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/grphiConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion
  ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/grphiConfig.cmake"
              "${PROJECT_BINARY_DIR}/grphiConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/grphi-xsimd-workaround.cmake"
        DESTINATION "${GRPHI_CMAKE_INSTALL_DIR}"
        COMPONENT grphi_development)

# The .pc file finds its prefix from its own location, so `cmake --install --prefix X` stays correct.
if(IS_ABSOLUTE "${GRPHI_PKGCONFIG_INSTALL_DIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  message(FATAL_ERROR "grphi: GRPHI_PKGCONFIG_INSTALL_DIR and CMAKE_INSTALL_INCLUDEDIR must be relative to the prefix")
endif()
file(RELATIVE_PATH GRPHI_PC_RELATIVE_PREFIX "/prefix/${GRPHI_PKGCONFIG_INSTALL_DIR}" "/prefix")
string(REGEX REPLACE "/$" "" GRPHI_PC_RELATIVE_PREFIX "${GRPHI_PC_RELATIVE_PREFIX}")
set(GRPHI_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
configure_file("${PROJECT_SOURCE_DIR}/cmake/grphi.pc.in" "${PROJECT_BINARY_DIR}/grphi.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/grphi.pc"
        DESTINATION "${GRPHI_PKGCONFIG_INSTALL_DIR}"
        COMPONENT grphi_development)
