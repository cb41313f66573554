// Launchers of the kernels for convolution, pooling, BatchNorm, dropout and the smaller ops (bool
// logic, GatherElements, Trilu). Conventions as kernels.cuh: device pointers, sizes, the stream;
// float tensors are float32 or bfloat16 (DType) with float32 arithmetic; copies that only move
// elements take their width instead (0: four bytes, 1: two, 2: eight, 3: one).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace cleave {

/**
 * A sliding window over three spatial dims; 1-D and 2-D windows lead with unit dims (size 1,
 * kernel 1, stride 1, no padding). Per dim: input size, kernel size, output size, stride, leading
 * pad, dilation, and the trailing pad (read only by AveragePool's count_include_pad divisor).
 */
struct Window3 {
  int64_t in[3], k[3], out[3], stride[3], pad[3], dil[3], padEnd[3];
};

/** Bool bytes: 0 and, 1 or (a and b broadcast by `sh.a`, `sh.b`), 2 not (b unused). */
void logic(int code, const uint8_t* a, const uint8_t* b, uint8_t* out, const Shape& sh, int64_t n, cudaStream_t s);
void is_nan(DType t, const void* x, uint8_t* out, int64_t n, cudaStream_t s);

/**
 * out[i] = data[Σ_d k_d·sh.a[d] + idx[i]·axisStride] over the index k of the indices' dims `sh.dims`
 * (sh.a[axis] is 0); negative indices count from the end of the axis, out-of-range ones give 0.
 */
void gather_elements(int width, const void* data, const int64_t* idx, void* out, const Shape& sh, int64_t axisStride,
                     int64_t axisDim, int64_t n, cudaStream_t s);
/** acc[Σ_d k_d·sh.a[d] + idx[i]·axisStride] += g[i] (acc float32, zeroed by the caller); out-of-range indices are skipped. */
void scatter_elements_add(DType t, const void* g, const int64_t* idx, float* acc, const Shape& sh, int64_t axisStride,
                          int64_t axisDim, int64_t n, cudaStream_t s);

/**
 * ONNX GatherND over batch · tuples · slice output elements: element (b, j, q) reads
 * data[b·batchStride + Σ_a wrap(idx[(b·tuples + j)·k + a])·sh.a[a] + q], k = sh.rank index axes of
 * sizes sh.dims (idx int32 where idx32, else int64; negative indices count from the end; a tuple
 * out of range gives 0, as gather_elements does). Elements move by width.
 */
void gather_nd(int width, const void* data, const void* idx, bool idx32, void* out, const Shape& sh, int64_t batch, int64_t tuples,
               int64_t slice, int64_t batchStride, cudaStream_t s);
/** acc (float32, zeroed by the caller) at that offset += g[(b·tuples + j)·slice + q], atomically; out-of-range tuples are skipped. */
void gather_nd_add(DType t, const void* g, const void* idx, bool idx32, float* acc, const Shape& sh, int64_t batch, int64_t tuples,
                   int64_t slice, int64_t batchStride, cudaStream_t s);

/** Matrices [rows, cols] stacked: keeps column − row ≥ k (upper) or ≤ k (lower), zeroes the rest. */
void trilu(int width, const void* x, void* out, int64_t n, int64_t rows, int64_t cols, int64_t k, bool upper, cudaStream_t s);

/**
 * Dropout with src/core/util/random.ts's generator (mulberry32): element i draws the (i+1)-th number after
 * `state` and is kept when that 32-bit draw is ≥ `threshold` (⌈ratio · 2³²⌉); kept elements are
 * scaled by `scale`, the others are 0. mask (bool bytes) may be null.
 */
void dropout(DType t, const void* x, void* y, uint8_t* mask, int64_t n, uint32_t state, uint64_t threshold, float scale, cudaStream_t s);

// BatchNormalization over x [N, C, inner]: per-channel float32 statistics and sums, each reduced in
// two stages (partials per chunk of a channel, then the chunks in order): deterministic, no atomics.

/** mean[c] and the biased variance var[c] of channel c (two passes, as the CPU kernel). */
void bn_stats(DType t, const void* x, float* mean, float* var, int64_t N, int64_t C, int64_t inner, cudaStream_t s);
/** y = (x − mean[c]) / √(var[c] + eps) · scale[c] + bias[c]; scale and bias of x's dtype. */
void bn_forward(DType t, const void* x, const void* scale, const void* bias, const float* mean, const float* var, void* y, int64_t N,
                int64_t C, int64_t inner, float eps, cudaStream_t s);
/** Running statistics: out = run · momentum + batch · (1 − momentum); either output may be null. */
void bn_running(DType t, const void* rm, const void* rv, const float* mean, const float* var, void* rmOut, void* rvOut, int64_t C,
                float momentum, cudaStream_t s);
/** sumG[c] = Σ g, sumGX[c] = Σ g · (x − mean[c]) / √(var[c] + eps) over channel c. */
void bn_grad_sums(DType t, const void* g, const void* x, const float* mean, const float* var, float* sumG, float* sumGX, int64_t N,
                  int64_t C, int64_t inner, float eps, cudaStream_t s);
/**
 * dx = scale·inv·(g − sumG/m − x̂·sumGX/m) on batch statistics (m = N·inner), or g·scale·inv on given
 * ones (training false: sumG and sumGX unused).
 */
void bn_grad_input(DType t, const void* g, const void* x, const void* scale, const float* mean, const float* var, const float* sumG,
                   const float* sumGX, void* dx, int64_t N, int64_t C, int64_t inner, float eps, bool training, cudaStream_t s);

// Convolution as GEMMs: columns laid out [C·K, images·O] (row c·K + kk holds, for every image and
// output position, the input element that kernel tap kk of channel c reads, or 0 in padding).

/** col from x [images, C, in…] (element width `width`). */
void im2col(int width, const void* x, void* col, int64_t images, int64_t C, const Window3& w, cudaStream_t s);
/** dx [images, C, in…] = Σ over the taps and output positions that read each element of the column gradients. */
void col2im(DType t, const void* col, void* dx, int64_t images, int64_t C, const Window3& w, cudaStream_t s);

// Pooling over planes (N·C of them) of `w.in` elements each; windows scan taps in row-major order.

/** Max of each window (−∞ if no element exceeds it); indices (int64, may be null): plane·in + position of the first maximum, or −1. */
void max_pool(DType t, const void* x, void* y, int64_t* indices, int64_t planes, const Window3& w, cudaStream_t s);
/** dx: each input element sums g of the windows whose first maximum it is. */
void max_pool_grad(DType t, const void* g, const void* x, void* dx, int64_t planes, const Window3& w, cudaStream_t s);
/** Mean of each window over its in-bounds elements, or over the window clipped to the padded input (includePad). */
void avg_pool(DType t, const void* x, void* y, int64_t planes, const Window3& w, bool includePad, cudaStream_t s);
void avg_pool_grad(DType t, const void* g, void* dx, int64_t planes, const Window3& w, bool includePad, cudaStream_t s);

// RMSNormalization over rows [rows, cols]: gamma (gl elements) is read at j mod gl.

/** y = x / √(mean(x²) + eps) · gamma. */
void rmsnorm(DType t, const void* x, const void* gamma, void* y, int64_t rows, int64_t cols, int64_t gl, float eps, cudaStream_t s);
/** dx = inv·(g·γ − x̂·mean(g·γ·x̂)), x̂ = x·inv, inv = 1/√(mean(x²) + eps). */
void rmsnorm_grad_input(DType t, const void* g, const void* x, const void* gamma, void* dx, int64_t rows, int64_t cols, int64_t gl, float eps,
                        cudaStream_t s);
/** dgamma[c] = Σ_r g·x̂ (cols elements), in two deterministic stages (row chunks, then the chunks in order). */
void rmsnorm_grad_params(DType t, const void* g, const void* x, void* dgamma, int64_t rows, int64_t cols, float eps, cudaStream_t s);

/**
 * ONNX RotaryEmbedding: element (b, s, h, d) of B·S·H·D at b·sB + s·sS + h·sH + d in x and out; the
 * first rd of each head rotate by rows of cos and sin ([cacheRows, rd/2]) chosen by pos (int64
 * [B, S]) or, pos null, row b·S + s.
 */
void rotary(DType t, const void* x, const void* cos, const void* sin, const int64_t* pos, void* out, int64_t B, int64_t S, int64_t H, int64_t D,
            int64_t sB, int64_t sS, int64_t sH, int64_t rd, bool interleaved, int64_t cacheRows, cudaStream_t s);

/** Cumulative sum of x [outer, dim, inner] along dim (exclusive, reverse as ONNX CumSum), float32 accumulation. */
void cumsum(DType t, const void* x, void* out, int64_t outer, int64_t dim, int64_t inner, bool exclusive, bool reverse, cudaStream_t s);

/**
 * Pad: out (dims sh.dims) reads the dense input (dims sh.a) at its index less the leading pads sh.b;
 * outside the input mode 0 writes `value`, 1 reflects, 2 repeats the edge.
 */
void pad(DType t, const void* x, void* out, const Shape& sh, int mode, float value, int64_t n, cudaStream_t s);
/** acc (float32, zeroed by the caller, the input's dims sh.a) += g (dims sh.dims) at each element's source. */
void pad_grad(DType t, const void* g, float* acc, const Shape& sh, int mode, int64_t n, cudaStream_t s);

// GatedUnit (SwiGLU/GeGLU's gate), elementwise over n elements of one shape; act 0 silu, 1 gelu_tanh, 2 gelu.

/** y = act(gate) · up. */
void gated_unit(DType t, const void* gate, const void* up, void* y, int64_t n, int act, cudaStream_t s);
/** dup = dy · act(gate), dgate = dy · up · act'(gate), in one pass (each element read before either output is written). */
void gated_unit_grad(DType t, const void* dy, const void* gate, const void* up, void* dgate, void* dup, int64_t n, int act, cudaStream_t s);

}  // namespace cleave
