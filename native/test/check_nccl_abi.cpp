// Compile-time check, on a host with NCCL installed, that the NCCL values and structs cleave
// declares itself (nccl_api.h) match nccl.h.
//   g++ -std=c++17 -fsyntax-only -Wno-enum-compare -I/usr/local/cuda/include -Inative/src native/test/check_nccl_abi.cpp
#include <nccl.h>

#include "nccl_api.h"

static_assert(cleave::NCCL_UINT8 == ncclUint8 && cleave::NCCL_INT64 == ncclInt64);
static_assert(cleave::NCCL_FLOAT16 == ncclFloat16 && cleave::NCCL_FLOAT32 == ncclFloat32 && cleave::NCCL_BFLOAT16 == ncclBfloat16);
static_assert(cleave::NCCL_SUM == ncclSum && cleave::NCCL_AVG == ncclAvg);
static_assert(cleave::SPLIT_NOCOLOR == NCCL_SPLIT_NOCOLOR);
static_assert(sizeof(cleave::ncclUniqueId) == sizeof(::ncclUniqueId));
