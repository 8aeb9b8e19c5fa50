// The emulator's <cuda_fp16.h>: the 16-bit float types and intrinsics live in cuda_shim.h.
#pragma once
#include "cuda_shim.h"
