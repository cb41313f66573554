// Launchers of cleave's CUDA kernels. Every launcher takes device pointers, sizes and the stream;
// tensors are float32, bfloat16 or float16 (dtype 0 / 1 / 2) and arithmetic is float32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace cleave {

// Integer and bool codes serve cast only; every other kernel takes the float codes.
enum DType : int { F32 = 0, BF16 = 1, F16 = 2, I64 = 3, I32 = 4, BOOL = 5 };
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
/** out[obase + Σ k·ostride] = in[ibase + Σ k·istride] over `dims` (concatenation, general copies). */
void copy_region(DType t, const void* in, void* out, const Shape& dims_in_out, const int64_t* ostrides, int64_t ibase, int64_t obase, int64_t n, cudaStream_t s);
void fill(DType t, void* out, int64_t n, float value, cudaStream_t s);
/** Sum / mean / max over reduced axes: out[j] folds in[base_j + Σ r·rstride] over `rcount` reduced positions. */
void reduce(int op, DType t, const void* in, void* out, const Shape& outer, const Shape& red, int64_t nout, int64_t nred, cudaStream_t s);
/** Comparisons into bool bytes: 0 equal, 1 less, 2 greater, 3 less-or-equal, 4 greater-or-equal, 5 and, 6 or. */
void compare(int code, DType t, const void* a, const void* b, uint8_t* out, const Shape& shape, int64_t n, cudaStream_t s);
/** out[o, idx[j], q] += g[o, j, q] (out zeroed by the caller; float32 accumulation buffer). */
void scatter_add(DType t, const void* g, const int64_t* idx, float* acc, int64_t outer, int64_t dim, int64_t nidx, int64_t inner, cudaStream_t s);
void layernorm_grad_input(DType t, const void* g, const void* x, const void* gamma, void* dx, int64_t rows, int64_t cols, int64_t gl, float eps, cudaStream_t s);
void layernorm_grad_params(DType t, const void* g, const void* x, void* dgamma, void* dbeta, int64_t rows, int64_t cols, float eps, cudaStream_t s);
/** Softmax cross-entropy per row: loss[r] = w·(lse − x[label]) or 0 when ignored; weight[r] = w or 0. */
void sce_forward(DType t, const void* scores, const int64_t* labels, float* loss, float* weight, int64_t rows, int64_t cols, int64_t ignore, cudaStream_t s);
/** dscores[r, c] = (softmax − onehot)·scale (scale = upstream / Σ weights for a mean). */
void sce_backward(DType t, const void* scores, const int64_t* labels, const float* upstream, const float* wsum, void* ds, int64_t rows, int64_t cols, int64_t ignore, int mean, cudaStream_t s);
/** *out = Σ x[i]² (float32). */
void gelu_grad(DType t, const void* g, const void* x, void* out, int64_t n, bool tanh_form, cudaStream_t s);
void cast(DType from, DType to, const void* in, void* out, int64_t n, cudaStream_t s);
/** One tensor of a multi-tensor AdamW: float32 weight, gradient and moments, an optional compute-dtype copy. */
struct AdamTensor {
  float* w;
  const float* g;
  float* m;
  float* v;
  void* copy;
  int64_t n;
};
/** Σ g² over the gradients of an AdamW table (entries and chunks as adamw_multi's) into out[0]. */
void sumsq_multi(const AdamTensor* tensors, const int64_t* chunks, int64_t nchunks, int64_t chunk, float* out, cudaStream_t s);
/** AdamW over many tensors in one launch: block b updates chunk b, chunks[2b] = tensor, chunks[2b+1] = first element. */
void adamw_multi(const AdamTensor* tensors, const int64_t* chunks, int64_t nchunks, int64_t chunk, DType copy, float lr, float b1, float b2,
                 float eps, float wd, float bc1, float bc2, float gscale, cudaStream_t s);

}  // namespace cleave
