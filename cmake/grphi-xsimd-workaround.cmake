# Debian 12's xsimd 8.1 config links its target to `xtl`, an optional library it does not ship,
# which turns into a failing `-lxtl`: drop that name unless an xtl target really exists.
# Included after find_package(xsimd) by CMakeLists.txt and by the installed grphiConfig.cmake.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_grphi_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_grphi_xsimd_links)
    list(REMOVE_ITEM _grphi_xsimd_links xtl)
    set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_grphi_xsimd_links}")
  endif()
  unset(_grphi_xsimd_links)
endif()
