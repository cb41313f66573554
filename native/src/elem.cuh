// Element access shared by the kernel files: storage in float32, bfloat16 or float16, arithmetic
// always in float32. DISPATCH_FLOAT binds `T` to the storage type of a DType.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels.cuh"

namespace cleave {

template <typename T> __device__ __forceinline__ float ld(const T* p, int64_t i);
template <> __device__ __forceinline__ float ld<float>(const float* p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
template <> __device__ __forceinline__ float ld<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <typename T> __device__ __forceinline__ void st(T* p, int64_t i, float v);
template <> __device__ __forceinline__ void st<float>(float* p, int64_t i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<__nv_bfloat16>(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }
template <> __device__ __forceinline__ void st<__half>(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

/**
 * Where output element i reads operands a and b, under their broadcast strides. `I` is 32-bit
 * where every offset fits (the launchers check): 64-bit division costs several times more, and
 * these kernels are bound by index arithmetic as much as by memory.
 */
template <typename I>
__device__ __forceinline__ void operand_offsets(const Shape& sh, I i, I& ia, I& ib) {
  ia = 0;
  ib = 0;
  for (int d = sh.rank - 1; d >= 0; --d) {
    const I n = (I)sh.dims[d];
    const I k = i % n;
    i /= n;
    ia += k * (I)sh.a[d];
    ib += k * (I)sh.b[d];
  }
}

}  // namespace cleave

#define DISPATCH_FLOAT(t, T, F)                  \
  if ((t) == ::cleave::F32) { using T = float; F; } \
  else if ((t) == ::cleave::F16) { using T = __half; F; } \
  else { using T = __nv_bfloat16; F; }
