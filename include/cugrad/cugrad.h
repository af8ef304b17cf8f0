// cugrad: everything an application includes.
#pragma once

#include "cugrad/device.h"
#include "cugrad/dtype.h"
#include "cugrad/error.h"
#include "cugrad/macros.h"
#include "cugrad/memory.h"
#include "cugrad/random.h"
#include "cugrad/stream.h"
#include "cugrad/tensor.h"
#include "cugrad/autograd.h"
#include "cugrad/hooks.h"
#include "cugrad/inspect.h"
#include "cugrad/io.h"
#include "cugrad/nn/functional.h"
#include "cugrad/optim.h"
