# Writes the build's layer graph for tools/check_layers.sh: one line per
# library or program of the given folders,
#
#   FOLDER TARGET DEP...
#
# (a folder without targets gets one line: FOLDER -), where DEP are the targets of this project it links (PUBLIC, PRIVATE or
# INTERFACE). The check compares every #include with these links, so the
# layering it enforces is the one the build uses and cannot drift from it.
#
# The folders are every subdirectory the build adds, except those named in
# ARGN (tests and benchmarks, which may use any layer).
function(keel_write_layer_graph out)
  set(text "")
  set(pending ${PROJECT_SOURCE_DIR})
  set(dirs "")
  while(pending)
    list(POP_FRONT pending d)
    get_property(subs DIRECTORY ${d} PROPERTY SUBDIRECTORIES)
    foreach(s IN LISTS subs)
      file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${s})
      if(NOT rel IN_LIST ARGN)
        list(APPEND dirs ${rel})
        list(APPEND pending ${s})
      endif()
    endforeach()
  endwhile()
  foreach(dir IN LISTS dirs)
    get_property(targets DIRECTORY ${PROJECT_SOURCE_DIR}/${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(t IN LISTS targets)
      get_target_property(kind ${t} TYPE)
      set(links "")
      if(NOT kind STREQUAL "INTERFACE_LIBRARY")
        get_target_property(direct ${t} LINK_LIBRARIES)
        if(direct)
          list(APPEND links ${direct})
        endif()
      endif()
      get_target_property(iface ${t} INTERFACE_LINK_LIBRARIES)
      if(iface)
        list(APPEND links ${iface})
      endif()
      set(deps "")
      foreach(l IN LISTS links)
        # PRIVATE links of a static library appear as $<LINK_ONLY:x>.
        string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" l "${l}")
        if(l MATCHES "^keel_" AND TARGET ${l})
          list(APPEND deps ${l})
        endif()
      endforeach()
      list(REMOVE_DUPLICATES deps)
      list(JOIN deps " " deps)
      string(APPEND text "${dir} ${t} ${deps}\n")
    endforeach()
    if(NOT targets)
      string(APPEND text "${dir} -\n")
    endif()
  endforeach()
  file(WRITE ${out} "${text}")
endfunction()
