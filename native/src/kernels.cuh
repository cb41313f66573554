// Launchers of cleave's CUDA kernels. Every launcher takes device pointers, sizes and the stream;
// tensors are float32 or bfloat16 (dtype 0 / 1) and arithmetic is float32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace cleave {

enum DType : int { F32 = 0, BF16 = 1 };
constexpr int MAX_RANK = 6;

struct Shape {
  int rank;
  int64_t dims[MAX_RANK];
  int64_t a[MAX_RANK];  // broadcast strides of operand a (0 where it broadcasts)
  int64_t b[MAX_RANK];
};

void unary(int code, DType t, const void* in, void* out, int64_t n, float alpha, float beta, cudaStream_t s);
void binary(int code, DType t, const void* a, const void* b, void* out, const Shape& shape, int64_t n, cudaStream_t s);
void softmax(DType t, const void* in, void* out, int64_t rows, int64_t cols, bool log, cudaStream_t s);
void layernorm(DType t, const void* x, const void* gamma, const void* beta, void* y, int64_t rows, int64_t cols,
               int64_t gammaLen, int64_t betaLen, float eps, cudaStream_t s);
/** out[i] = in[base + Σ k_d · in_strides_d] over the output's index (transpose, slice, split, expand). */
void strided_copy(DType t, const void* in, void* out, const Shape& shape, int64_t base, int64_t n, cudaStream_t s);
/** Embedding-style gather: out[o, j, q] = data[o, idx[j], q]; idx int64. */
void gather(DType t, const void* data, const int64_t* idx, void* out, int64_t outer, int64_t dim, int64_t nidx, int64_t inner, cudaStream_t s);
/** out = cond ? x : y, broadcast; cond is bool bytes; strides in `shape.a` (cond), `shape.b` (x), `c` (y). */
void where(DType t, const uint8_t* cond, const void* x, const void* y, void* out, const Shape& shape, const int64_t* cstrides, int64_t n, cudaStream_t s);
void gelu_grad(DType t, const void* g, const void* x, void* out, int64_t n, bool tanh_form, cudaStream_t s);
void cast(DType from, DType to, const void* in, void* out, int64_t n, cudaStream_t s);
void adamw(float* w, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd,
           float bc1, float bc2, cudaStream_t s);

}  // namespace cleave
