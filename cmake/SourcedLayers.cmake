# One static library per layer, each able to include only its own headers and those of the layers it
# depends on. The public headers all live in include/sourced/, so each layer gets a staging directory in
# the build tree holding links to just its own headers (and its internal src/ folders): a layer that
# includes a header of a layer above it does not find it, and fails to compile.
#
#   sourced_add_layer(NAME store
#     SOURCES src/store/reader.cpp ...      # its implementation
#     HEADERS store.hpp reader.hpp          # its public headers, in include/sourced/
#     INTERNAL store                        # src/ folders its own code and the layers above it may use
#     DEPS sourced_core)                    # the layers below it (PUBLIC)
function(sourced_add_layer)
  cmake_parse_arguments(L "" "NAME" "SOURCES;HEADERS;INTERNAL;PRIVATE_INTERNAL;DEPS" ${ARGN})
  set(target sourced_${L_NAME})
  set(stage ${PROJECT_BINARY_DIR}/layers/${L_NAME})
  file(REMOVE_RECURSE ${stage})
  file(MAKE_DIRECTORY ${stage}/include/sourced ${stage}/internal ${stage}/private)
  foreach(h IN LISTS L_HEADERS)
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/include/sourced/${h} ${stage}/include/sourced/${h} SYMBOLIC)
  endforeach()
  # INTERNAL folders are visible to the layers above (e.g. the engines use src/store/append_rules.hpp);
  # PRIVATE_INTERNAL ones only to the layer itself.
  foreach(kind internal private)
    if(kind STREQUAL "internal")
      set(dirs ${L_INTERNAL})
    else()
      set(dirs ${L_PRIVATE_INTERNAL})
    endif()
    foreach(d IN LISTS dirs)
      get_filename_component(parent ${stage}/${kind}/${d} DIRECTORY)
      file(MAKE_DIRECTORY ${parent})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${d} ${stage}/${kind}/${d} SYMBOLIC)
    endforeach()
  endforeach()

  add_library(${target} STATIC ${L_SOURCES})
  add_library(sourced::${L_NAME} ALIAS ${target})
  target_include_directories(${target}
    PUBLIC $<BUILD_INTERFACE:${stage}/include> $<INSTALL_INTERFACE:include>
    PRIVATE ${stage}/private)
  # The internal folders reach the layers above through an interface target that they link privately,
  # so they never leak to users of the installed package.
  add_library(${target}_internal INTERFACE)
  target_include_directories(${target}_internal INTERFACE $<BUILD_INTERFACE:${stage}/internal>)
  target_link_libraries(${target} PUBLIC ${L_DEPS} PRIVATE ${target}_internal)
  foreach(dep IN LISTS L_DEPS)
    if(TARGET ${dep}_internal)
      target_link_libraries(${target} PRIVATE ${dep}_internal)
    endif()
  endforeach()
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${L_NAME} POSITION_INDEPENDENT_CODE ON)
  set_property(GLOBAL APPEND PROPERTY SOURCED_LAYERS ${target} ${target}_internal)
  set_property(GLOBAL APPEND PROPERTY SOURCED_PUBLIC_HEADERS ${L_HEADERS})
endfunction()
