# The example programs built against the emulated library, and a short run of each on the
# emulated GPU (--device cuda): the demo's chain train -> finetune -> adversarial -> inspect, plus
# map_vs_mle, on tiny subsets. They check that the GPU paths of the examples (pinned-memory data
# loading on a copy stream, the Inspector, attacks through autograd::grad on the device, frozen
# fine-tuning) run without error; accuracy is not judged at these sizes. Included from
# CMakeLists.txt; needs Fashion-MNIST (Debian's dataset-fashion-mnist), else each run skips (77).
find_package(PNG REQUIRED)
find_package(CLI11 QUIET CONFIG)
if(NOT TARGET CLI11::CLI11)
  find_path(EMU_CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  set_target_properties(CLI11::CLI11 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${EMU_CLI11_INCLUDE_DIR})
endif()

file(GLOB EMU_EXAMPLE_COMMON CONFIGURE_DEPENDS ${ROOT}/examples/common/*.cpp)
add_library(emu_example_common STATIC ${EMU_EXAMPLE_COMMON} ${ROOT}/examples/recipe.cpp)
target_include_directories(emu_example_common PUBLIC ${ROOT})
target_link_libraries(emu_example_common PUBLIC cugrad CLI11::CLI11 PRIVATE PNG::PNG)
target_compile_options(emu_example_common PRIVATE ${EMU_FLAGS})
foreach(name train finetune adversarial inspect map_vs_mle)
  add_executable(${name} ${ROOT}/examples/${name}.cpp)
  target_link_libraries(${name} PRIVATE emu_example_common)
  target_compile_options(${name} PRIVATE ${EMU_FLAGS} -Wno-missing-field-initializers)
endforeach()
add_executable(demo ${ROOT}/examples/demo.cpp)
target_link_libraries(demo PRIVATE cugrad)

set(EMU_EX_OUT ${CMAKE_CURRENT_BINARY_DIR}/examples-out)
set(EMU_EX_COMMON --device cuda --out ${EMU_EX_OUT} --width 4)
add_test(NAME example.emu.demo COMMAND demo)
add_test(NAME example.emu.train
         COMMAND train ${EMU_EX_COMMON} --epochs 1 --max-train 512 --max-test 256 --batch-size 64)
add_test(NAME example.emu.finetune
         COMMAND finetune ${EMU_EX_COMMON} --epochs 1 --finetune-epochs 1 --max-train 512 --max-test 256
                 --batch-size 64 --timing-steps 2)
add_test(NAME example.emu.adversarial
         COMMAND adversarial ${EMU_EX_COMMON} --images 128 --batch-size 64 --pgd-steps 3 --pgd-random-start)
add_test(NAME example.emu.inspect
         COMMAND inspect ${EMU_EX_COMMON} --steps 8 --every 4 --max-train 512 --batch-size 64)
add_test(NAME example.emu.map_vs_mle
         COMMAND map_vs_mle --device cuda --out ${EMU_EX_OUT} --images 256 --seeds 1 --epochs 1)
set_tests_properties(example.emu.demo example.emu.train example.emu.finetune example.emu.adversarial
                     example.emu.inspect example.emu.map_vs_mle
                     PROPERTIES LABELS emu SKIP_RETURN_CODE 77 TIMEOUT 1800
                                ENVIRONMENT "CUGRAD_EMU_ASYNC=1")  # asynchronous streams
set_tests_properties(example.emu.adversarial PROPERTIES DEPENDS example.emu.train)
# train --cuda-graph saves the same checkpoint as the eager run, bit for bit.
add_test(NAME example.emu.train_cuda_graph
         COMMAND ${ROOT}/tests/emu/train_graph_matches_eager.sh $<TARGET_FILE:train>
                 ${CMAKE_CURRENT_BINARY_DIR}/examples-graph)
set_tests_properties(example.emu.train_cuda_graph PROPERTIES LABELS emu SKIP_RETURN_CODE 77 TIMEOUT 1800
                                                            ENVIRONMENT "CUGRAD_EMU_ASYNC=1")
