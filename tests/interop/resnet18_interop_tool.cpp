// Helper program of tests/interop/resnet18_interop.py: loads a torchvision ResNet-18 state dict
// (safetensors written by PyTorch) into cugrad's resnet18 with strict=true, runs it in eval
// mode on the input tensor `x` of a second file, and writes the logits and cugrad's own state
// dict, which the script then loads back into torchvision.
//   resnet18_interop_tool STATE.safetensors INPUT.safetensors LOGITS_OUT.safetensors STATE_OUT.safetensors CLASSES
#include <cstdio>
#include <string>

#include "cugrad/cugrad.h"

namespace cg = cugrad;

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s STATE INPUT LOGITS_OUT STATE_OUT CLASSES\n", argv[0]);
    return 2;
  }
  try {
    cg::nn::ResNet model = cg::nn::resnet18(std::stoll(argv[5]), 3);
    model->load_state_dict(cg::io::load_safetensors(argv[1]), /*strict=*/true);
    model->eval();
    const cg::Tensor x = cg::io::load_safetensors(argv[2]).at("x");
    cg::Tensor logits;
    {
      cg::NoGradGuard ng;
      logits = model(x);
    }
    cg::io::save_safetensors({{"logits", logits}}, argv[3]);
    cg::io::save_safetensors(model->state_dict(), argv[4]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resnet18_interop_tool: %s\n", e.what());
    return 1;
  }
  return 0;
}
