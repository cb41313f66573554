#include <stdexcept>

#include "check.h"
#include "elem.cuh"
#include "kernels_extra.cuh"
#include "op_codes.h"

namespace cleave {

namespace {

#define GRID_LOOP(I, i, n) for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (n); i += (I)gridDim.x * blockDim.x)

// --- bool logic, IsNaN -------------------------------------------------------------------------

template <typename I>
__global__ void logic_kernel(int code, const uint8_t* a, const uint8_t* b, uint8_t* out, Shape sh, I n) {
  GRID_LOOP(I, i, n) {
    I ia, ib;
    operand_offsets(sh, i, ia, ib);
    const bool x = a[ia] != 0;
    bool r;
    if (code == LOGIC_AND) r = x && b[ib] != 0;
    else if (code == LOGIC_OR) r = x || b[ib] != 0;
    else r = !x;
    out[i] = r ? 1 : 0;
  }
}

template <typename T>
__global__ void is_nan_kernel(const T* x, uint8_t* out, int64_t n) {
  GRID_LOOP(int64_t, i, n) out[i] = isnan(ld(x, i)) ? 1 : 0;
}

// --- GatherElements and its gradient -----------------------------------------------------------

/** Offset of index i over `sh.dims` under the strides `sh.a` (the gathered axis has stride 0 there). */
template <typename I>
__device__ __forceinline__ I strided_offset(const Shape& sh, I i) {
  I off = 0;
  for (int d = sh.rank - 1; d >= 0; --d) {
    const I m = (I)sh.dims[d];
    off += (i % m) * (I)sh.a[d];
    i /= m;
  }
  return off;
}

template <typename T, typename I>
__global__ void gather_elements_kernel(const T* data, const int64_t* idx, T* out, Shape sh, I axisStride, int64_t axisDim, I n) {
  GRID_LOOP(I, i, n) {
    int64_t k = idx[i];
    if (k < 0) k += axisDim;
    out[i] = k >= 0 && k < axisDim ? data[strided_offset(sh, i) + (I)k * axisStride] : T(0);
  }
}

template <typename T, typename I>
__global__ void scatter_elements_add_kernel(const T* g, const int64_t* idx, float* acc, Shape sh, I axisStride, int64_t axisDim, I n) {
  GRID_LOOP(I, i, n) {
    int64_t k = idx[i];
    if (k < 0) k += axisDim;
    if (k >= 0 && k < axisDim) atomicAdd(acc + strided_offset(sh, i) + (I)k * axisStride, ld(g, i));
  }
}

// --- GatherND and its gradient ------------------------------------------------------------------

/**
 * Data offset of output element (r = b·tuples + j, q): b·batchStride + Σ_a wrap(t[a])·sh.a[a] + q over
 * the tuple t = idx + r·k (k = sh.rank), or −1 where an index is out of range for its axis.
 */
template <typename X, typename I>
__device__ __forceinline__ int64_t gather_nd_offset(const X* idx, const Shape& sh, I r, I tuples, I batchStride, I q) {
  const X* t = idx + (int64_t)r * sh.rank;
  int64_t off = (int64_t)(r / tuples) * (int64_t)batchStride + (int64_t)q;
  for (int a = 0; a < sh.rank; ++a) {
    int64_t v = (int64_t)t[a];
    if (v < 0) v += sh.dims[a];
    if (v < 0 || v >= sh.dims[a]) return -1;
    off += v * sh.a[a];
  }
  return off;
}

/** One output element per thread: element (b, j, q) copies the data element its tuple picks (0 out of range). */
template <typename T, typename X, typename I>
__global__ void gather_nd_kernel(const T* data, const X* idx, T* out, Shape sh, I tuples, I slice, I batchStride, I n) {
  GRID_LOOP(I, i, n) {
    const int64_t off = gather_nd_offset<X, I>(idx, sh, i / slice, tuples, batchStride, i % slice);
    out[i] = off >= 0 ? data[(I)off] : T(0);
  }
}

/**
 * One dy element per thread, added into the float32 accumulator with atomicAdd: the existing Gather
 * gradient (scatter_add_kernel) is atomic too, so repeated tuples sum in an unspecified order.
 */
template <typename T, typename X, typename I>
__global__ void gather_nd_add_kernel(const T* g, const X* idx, float* acc, Shape sh, I tuples, I slice, I batchStride, I n) {
  GRID_LOOP(I, i, n) {
    const int64_t off = gather_nd_offset<X, I>(idx, sh, i / slice, tuples, batchStride, i % slice);
    if (off >= 0) atomicAdd(acc + off, ld(g, i));
  }
}

// --- Trilu, Dropout ----------------------------------------------------------------------------

template <typename T, typename I>
__global__ void trilu_kernel(const T* x, T* out, I n, I rows, I cols, int64_t k, bool upper) {
  GRID_LOOP(I, i, n) {
    const int64_t diff = (int64_t)(i % cols) - (int64_t)((i / cols) % rows);
    out[i] = (upper ? diff >= k : diff <= k) ? x[i] : T(0);
  }
}

/** mulberry32's output for the generator state t (src/core/util/random.ts, Rng.next). */
__device__ __forceinline__ uint32_t mulberry32(uint32_t t) {
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return t ^ (t >> 14);
}

template <typename T>
__global__ void dropout_kernel(const T* x, T* y, uint8_t* mask, int64_t n, uint32_t state, uint64_t threshold, float scale) {
  GRID_LOOP(int64_t, i, n) {
    // The (i+1)-th draw: the state advances by the same odd constant at every draw.
    const uint32_t draw = mulberry32(state + (uint32_t)(i + 1) * 0x6D2B79F5u);
    const bool keep = (uint64_t)draw >= threshold;
    st(y, i, keep ? ld(x, i) * scale : 0.f);
    if (mask) mask[i] = keep ? 1 : 0;
  }
}

// --- BatchNormalization ------------------------------------------------------------------------

constexpr int BN_THREADS = 256;

/** Sum over the block (blockDim.x a multiple of 32); the result is valid in thread 0. */
__device__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  // Nobody may write `part` again (a second call) before warp 0 has read it.
  __syncthreads();
  return v;
}

/**
 * Stage one of a per-channel reduction over x [N, C, inner]: block c·chunks + k folds elements
 * [k·chunk, (k+1)·chunk) of channel c's N·inner. MODE 0: Σ x; 1: Σ (x − mean)²; 2: Σ g into p0 and
 * Σ g·(x − mean)·inv into p1.
 */
template <int MODE, typename T, typename I>
__global__ void channel_partials_kernel(const T* x, const T* g, const float* mean, const float* var, float eps, float* p0, float* p1,
                                        I C, I inner, I per, I chunk, I chunks) {
  const I c = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const I j0 = k * chunk, j1 = per - j0 < chunk ? per : j0 + chunk;
  const float m = MODE == 0 ? 0.f : mean[c];
  const float inv = MODE == 2 ? 1.f / sqrtf(var[c] + eps) : 0.f;
  float a = 0.f, b = 0.f;
  for (I j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    const I n = j / inner, q = j - n * inner;
    const I off = (n * C + c) * inner + q;
    const float v = ld(x, off);
    if (MODE == 0) {
      a += v;
    } else if (MODE == 1) {
      a += (v - m) * (v - m);
    } else {
      const float gv = ld(g, off);
      a += gv;
      b += gv * (v - m) * inv;
    }
  }
  a = block_sum(a);
  if (MODE == 2) b = block_sum(b);
  if (threadIdx.x == 0) {
    p0[blockIdx.x] = a;
    if (MODE == 2) p1[blockIdx.x] = b;
  }
}

/** Stage two: out[c] = (Σ_k partial[c·chunks + k], k in order) / div. */
__global__ void channel_finish_kernel(const float* partial, float* out, int64_t C, int64_t chunks, float div) {
  GRID_LOOP(int64_t, c, C) {
    float s = 0.f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[c * chunks + k];
    out[c] = s / div;
  }
}

template <typename T, typename I>
__global__ void bn_forward_kernel(const T* x, const T* scale, const T* bias, const float* mean, const float* var, T* y, I C, I inner,
                                  float eps, I n) {
  GRID_LOOP(I, i, n) {
    const I c = (i / inner) % C;
    st(y, i, (ld(x, i) - mean[c]) / sqrtf(var[c] + eps) * ld(scale, c) + ld(bias, c));
  }
}

template <typename T>
__global__ void bn_running_kernel(const T* rm, const T* rv, const float* mean, const float* var, T* rmOut, T* rvOut, int64_t C, float mom) {
  GRID_LOOP(int64_t, c, C) {
    if (rmOut) st(rmOut, c, ld(rm, c) * mom + mean[c] * (1.f - mom));
    if (rvOut) st(rvOut, c, ld(rv, c) * mom + var[c] * (1.f - mom));
  }
}

template <typename T, typename I>
__global__ void bn_grad_input_kernel(const T* g, const T* x, const T* scale, const float* mean, const float* var, const float* sumG,
                                     const float* sumGX, T* dx, I C, I inner, float m, float eps, bool training, I n) {
  GRID_LOOP(I, i, n) {
    const I c = (i / inner) % C;
    const float inv = 1.f / sqrtf(var[c] + eps), gs = ld(scale, c) * inv, gv = ld(g, i);
    if (training) {
      const float xh = (ld(x, i) - mean[c]) * inv;
      st(dx, i, gs * (gv - sumG[c] / m - xh * sumGX[c] / m));
    } else {
      st(dx, i, gv * gs);
    }
  }
}

// --- windows: convolution columns and pooling --------------------------------------------------

/** Window3 in 32-bit ints: spatial arithmetic per element stays cheap (sizes are far below 2³¹). */
struct Win {
  int in[3], k[3], out[3], stride[3], pad[3], dil[3], padEnd[3];
  int inSize, kSize, outSize;
};

Win win_of(const Window3& w) {
  Win v{};
  for (int d = 0; d < 3; ++d) {
    v.in[d] = (int)w.in[d];
    v.k[d] = (int)w.k[d];
    v.out[d] = (int)w.out[d];
    v.stride[d] = (int)w.stride[d];
    v.pad[d] = (int)w.pad[d];
    v.dil[d] = (int)w.dil[d];
    v.padEnd[d] = (int)w.padEnd[d];
  }
  v.inSize = v.in[0] * v.in[1] * v.in[2];
  v.kSize = v.k[0] * v.k[1] * v.k[2];
  v.outSize = v.out[0] * v.out[1] * v.out[2];
  return v;
}

/** Flat position → its three coordinates over `size` (row-major). */
__device__ __forceinline__ void coords(int flat, const int* size, int* c) {
  c[2] = flat % size[2];
  flat /= size[2];
  c[1] = flat % size[1];
  c[0] = flat / size[1];
}

/** Input coordinate that tap q of output coordinate o reads along dim d (may fall in the padding). */
__device__ __forceinline__ int tap_input(const Win& w, int d, int o, int q) { return o * w.stride[d] - w.pad[d] + q * w.dil[d]; }

/** Whether tap q reads input coordinate p along dim d from some output coordinate, returned in o. */
__device__ __forceinline__ bool tap_output(const Win& w, int d, int p, int q, int& o) {
  const int t = p + w.pad[d] - q * w.dil[d];
  if (t < 0 || t % w.stride[d] != 0) return false;
  o = t / w.stride[d];
  return o < w.out[d];
}

/** Taps of output coordinate o along dim d that land inside the input. */
__device__ __forceinline__ int inside_taps(const Win& w, int d, int o) {
  int n = 0;
  for (int q = 0; q < w.k[d]; ++q) {
    const int p = tap_input(w, d, o, q);
    n += p >= 0 && p < w.in[d] ? 1 : 0;
  }
  return n;
}

/** Taps of output coordinate o along dim d inside the padded input (count_include_pad's divisor). */
__device__ __forceinline__ int padded_taps(const Win& w, int d, int o) {
  const int start = o * w.stride[d] - w.pad[d];
  const int limit = w.in[d] + w.padEnd[d];
  const int end = start + (w.k[d] - 1) * w.dil[d] + 1 < limit ? start + (w.k[d] - 1) * w.dil[d] + 1 : limit;
  const int lo = start > -w.pad[d] ? start : -w.pad[d];
  return end > lo ? (end - lo + w.dil[d] - 1) / w.dil[d] : 0;
}

/** col[(c·K + tap)·(images·O) + image·O + o] = x[image, c, the tap's input position] or 0. */
template <typename T, typename I>
__global__ void im2col_kernel(const T* x, T* col, Win w, I images, I C, I n) {
  const I O = (I)w.outSize, K = (I)w.kSize, S = (I)w.inSize;
  GRID_LOOP(I, i, n) {
    const I o = i % O, rest = i / O, image = rest % images, row = rest / images;
    const I c = row / K, tap = row % K;
    int oc[3], qc[3], p[3];
    coords((int)o, w.out, oc);
    coords((int)tap, w.k, qc);
    bool inside = true;
    for (int d = 0; d < 3; ++d) {
      p[d] = tap_input(w, d, oc[d], qc[d]);
      inside = inside && p[d] >= 0 && p[d] < w.in[d];
    }
    col[i] = inside ? x[(image * C + c) * S + (I)((p[0] * w.in[1] + p[1]) * w.in[2] + p[2])] : T(0);
  }
}

/**
 * Calls f(o, local, tap) for every output position o (local: its index in the plane) whose window
 * reads input position p, and the window's tap that reads it.
 */
template <typename F>
__device__ __forceinline__ void each_window_reading(const Win& w, const int* p, F f) {
  int o[3];
  for (int q0 = 0; q0 < w.k[0]; ++q0) {
    if (!tap_output(w, 0, p[0], q0, o[0])) continue;
    for (int q1 = 0; q1 < w.k[1]; ++q1) {
      if (!tap_output(w, 1, p[1], q1, o[1])) continue;
      for (int q2 = 0; q2 < w.k[2]; ++q2) {
        if (!tap_output(w, 2, p[2], q2, o[2])) continue;
        f(o, (o[0] * w.out[1] + o[1]) * w.out[2] + o[2], (q0 * w.k[1] + q1) * w.k[2] + q2);
      }
    }
  }
}

/** dx[image, c, p] = Σ over taps q reaching p from output position o of col[(c·K + q)·(images·O) + image·O + o]. */
template <typename T, typename I>
__global__ void col2im_kernel(const T* col, T* dx, Win w, I images, I C, I n) {
  const I O = (I)w.outSize, K = (I)w.kSize, S = (I)w.inSize, rowLen = images * O;
  GRID_LOOP(I, i, n) {
    const I s = i % S, ic = i / S, c = ic % C, image = ic / C;
    int p[3];
    coords((int)s, w.in, p);
    float acc = 0.f;
    each_window_reading(w, p, [&](const int*, int local, int tap) { acc += ld(col, (c * K + (I)tap) * rowLen + image * O + (I)local); });
    st(dx, i, acc);
  }
}

/** Calls f(flat) for every in-bounds input position (flat: its index in the plane) that output position oc's window reads, in order. */
template <typename F>
__device__ __forceinline__ void each_tap(const Win& w, const int* oc, F f) {
  for (int q0 = 0; q0 < w.k[0]; ++q0) {
    const int p0 = tap_input(w, 0, oc[0], q0);
    if (p0 < 0 || p0 >= w.in[0]) continue;
    for (int q1 = 0; q1 < w.k[1]; ++q1) {
      const int p1 = tap_input(w, 1, oc[1], q1);
      if (p1 < 0 || p1 >= w.in[1]) continue;
      for (int q2 = 0; q2 < w.k[2]; ++q2) {
        const int p2 = tap_input(w, 2, oc[2], q2);
        if (p2 < 0 || p2 >= w.in[2]) continue;
        f((p0 * w.in[1] + p1) * w.in[2] + p2);
      }
    }
  }
}

/**
 * Max pooling over output index i (plane·O + o): the max with strict '>' in tap order, as the CPU
 * kernel (ties go to the first tap; −∞ and NaN never win). Outputs may be null: the max (y), its
 * global index (indices, as MaxPool's second output), its position in the plane (arg, for the gradient).
 */
template <typename T, typename I>
__global__ void max_pool_kernel(const T* x, T* y, int64_t* indices, int* arg, Win w, I n) {
  const I O = (I)w.outSize, S = (I)w.inSize;
  GRID_LOOP(I, i, n) {
    const I o = i % O, plane = i / O;
    int oc[3];
    coords((int)o, w.out, oc);
    float best = -INFINITY;
    int at = -1;
    each_tap(w, oc, [&](int flat) {
      const float v = ld(x, plane * S + (I)flat);
      if (v > best) {
        best = v;
        at = flat;
      }
    });
    if (y) st(y, i, best);
    if (indices) indices[i] = at < 0 ? -1 : (int64_t)plane * S + at;
    if (arg) arg[i] = at;
  }
}

/** dx[plane, p] = Σ g[plane, o] over the windows o that contain p and whose first maximum is p. */
template <typename T, typename I>
__global__ void max_pool_grad_kernel(const T* g, const int* arg, T* dx, Win w, I n) {
  const I S = (I)w.inSize;
  GRID_LOOP(I, i, n) {
    const I s = i % S, plane = i / S;
    int p[3];
    coords((int)s, w.in, p);
    float acc = 0.f;
    each_window_reading(w, p, [&](const int*, int local, int) {
      const I op = plane * (I)w.outSize + (I)local;
      if (arg[op] == (int)s) acc += ld(g, op);
    });
    st(dx, i, acc);
  }
}

/** The divisor of output position oc: in-bounds taps, or taps inside the padded input. */
__device__ __forceinline__ float avg_divisor(const Win& w, const int* oc, bool includePad) {
  int n = 1;
  for (int d = 0; d < 3; ++d) n *= includePad ? padded_taps(w, d, oc[d]) : inside_taps(w, d, oc[d]);
  return (float)n;
}

template <typename T, typename I>
__global__ void avg_pool_kernel(const T* x, T* y, Win w, bool includePad, I n) {
  const I O = (I)w.outSize, S = (I)w.inSize;
  GRID_LOOP(I, i, n) {
    const I o = i % O, plane = i / O;
    int oc[3];
    coords((int)o, w.out, oc);
    float acc = 0.f;
    each_tap(w, oc, [&](int flat) { acc += ld(x, plane * S + (I)flat); });
    // A window wholly in the padding divides 0 by 0 (NaN), as the CPU kernel does.
    st(y, i, acc / avg_divisor(w, oc, includePad));
  }
}

template <typename T, typename I>
__global__ void avg_pool_grad_kernel(const T* g, T* dx, Win w, bool includePad, I n) {
  const I S = (I)w.inSize;
  GRID_LOOP(I, i, n) {
    const I s = i % S, plane = i / S;
    int p[3];
    coords((int)s, w.in, p);
    float acc = 0.f;
    each_window_reading(w, p, [&](const int* o, int local, int) { acc += ld(g, plane * (I)w.outSize + (I)local) / avg_divisor(w, o, includePad); });
    st(dx, i, acc);
  }
}

// --- RMSNormalization ---------------------------------------------------------------------------
// One warp per row (8 rows a block): Σ x² by the warp, no __syncthreads; rows of any width loop.

constexpr int RMS_ROWS_PER_BLOCK = 8;

__device__ __forceinline__ float rms_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

/** 1/√(mean(x²) + eps) of row xr, in every lane of the warp. */
template <typename T>
__device__ __forceinline__ float rms_inv(const T* xr, int64_t cols, float eps) {
  float s = 0.f;
  for (int64_t j = threadIdx.x & 31; j < cols; j += 32) {
    const float v = ld(xr, j);
    s += v * v;
  }
  return rsqrtf(rms_warp_sum(s) / cols + eps);
}

template <typename T>
__global__ void rmsnorm_kernel(const T* x, const T* gamma, T* y, int64_t rows, int64_t cols, int64_t gl, float eps) {
  const int64_t row = blockIdx.x * (int64_t)RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  const float inv = rms_inv(xr, cols, eps);
  for (int64_t j = threadIdx.x & 31; j < cols; j += 32) st(yr, j, ld(xr, j) * inv * ld(gamma, gl == cols ? j : j % gl));
}

/** dx = inv·(g·γ − x̂·mean(g·γ·x̂)), x̂ = x·inv. */
template <typename T>
__global__ void rmsnorm_grad_input_kernel(const T* g, const T* x, const T* gamma, T* dx, int64_t rows, int64_t cols, int64_t gl, float eps) {
  const int64_t row = blockIdx.x * (int64_t)RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const T* xr = x + row * cols;
  const T* gr = g + row * cols;
  T* dr = dx + row * cols;
  const float inv = rms_inv(xr, cols, eps);
  float b = 0.f;
  for (int64_t j = lane; j < cols; j += 32) b += ld(gr, j) * ld(gamma, gl == cols ? j : j % gl) * ld(xr, j) * inv;
  b = rms_warp_sum(b) / cols;
  for (int64_t j = lane; j < cols; j += 32) st(dr, j, inv * (ld(gr, j) * ld(gamma, gl == cols ? j : j % gl) - ld(xr, j) * inv * b));
}

template <typename T>
__global__ void rms_inv_kernel(const T* x, float* inv, int64_t rows, int64_t cols, float eps) {
  const int64_t row = blockIdx.x * (int64_t)RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  if (row >= rows) return;
  const float r = rms_inv(x + row * cols, cols, eps);
  if ((threadIdx.x & 31) == 0) inv[row] = r;
}

// dγ[c] = Σ_r g·x·inv[r]: a block owns 32 columns and a chunk of rows (32 × 8 threads, a warp
// reading one row coalesced); each chunk writes its float32 partial, a second kernel adds the
// chunks in order (deterministic, no atomics).
constexpr int RMS_TILE = 32, RMS_TILE_ROWS = 8;

template <typename T>
__global__ void rmsnorm_grad_params_kernel(const T* g, const T* x, const float* inv, float* partial, int64_t rows, int64_t cols, int64_t chunk) {
  const int64_t c = blockIdx.x * (int64_t)RMS_TILE + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float a = 0.f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += RMS_TILE_ROWS) a += ld(g, r * cols + c) * ld(x, r * cols + c) * inv[r];
  __shared__ float sa[RMS_TILE_ROWS][RMS_TILE];
  sa[threadIdx.y][threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < RMS_TILE_ROWS; ++k) a += sa[k][threadIdx.x];
    partial[blockIdx.y * cols + c] = a;
  }
}

template <typename T>
__global__ void column_chunks_sum_kernel(const float* partial, T* out, int64_t cols, int64_t chunks) {
  GRID_LOOP(int64_t, c, cols) {
    float s = 0.f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
    st(out, c, s);
  }
}

// --- RotaryEmbedding -----------------------------------------------------------------------------

/**
 * Output element (b, s, h, d) over B·S·H·D, read and written at b·sB + s·sS + h·sH + d: the first
 * rd of each head rotate (pairs (j, j + rd/2), or (2j, 2j + 1) interleaved) by the cache row of the
 * position (positions[b·S + s], or b·S + s without them); a row beyond the caches gives 0.
 */
template <typename T, typename I>
__global__ void rotary_kernel(const T* x, const T* cos, const T* sin, const int64_t* pos, T* out, I S, I H, I D, I sB, I sS, I sH, I rd,
                              bool interleaved, int64_t cacheRows, I n) {
  GRID_LOOP(I, i, n) {
    const I d = i % D, h = (i / D) % H, s = (i / (D * H)) % S, b = i / (D * H * S);
    const I off = b * sB + s * sS + h * sH + d;
    if (d >= rd) {
      out[off] = x[off];
      continue;
    }
    const I half = rd / 2;
    const int64_t row = pos ? pos[b * S + s] : (int64_t)(b * S + s);
    if (row < 0 || row >= cacheRows) {
      st(out, off, 0.f);
      continue;
    }
    const bool first = interleaved ? d % 2 == 0 : d < half;
    const I j = interleaved ? d / 2 : (first ? d : d - half);
    const I partner = interleaved ? (first ? d + 1 : d - 1) : (first ? d + half : d - half);
    const float c = ld(cos, row * half + j), sn = ld(sin, row * half + j);
    const float v = ld(x, off), p = ld(x, off - d + partner);
    st(out, off, first ? c * v - sn * p : sn * p + c * v);
  }
}

// --- CumSum ----------------------------------------------------------------------------------------

/** One thread per line (outer, inner) of x [outer, dim, inner], summing along dim in float32. */
template <typename T, typename I>
__global__ void cumsum_kernel(const T* x, T* out, I outer, I dim, I inner, bool exclusive, bool reverse) {
  GRID_LOOP(I, line, outer * inner) {
    const I o = line / inner, q = line % inner;
    float acc = 0.f;
    for (I k = 0; k < dim; ++k) {
      const I i = (o * dim + (reverse ? dim - 1 - k : k)) * inner + q;
      const float v = ld(x, i);
      if (exclusive) {
        st(out, i, acc);
        acc += v;
      } else {
        acc += v;
        st(out, i, acc);
      }
    }
  }
}

// --- Pad ---------------------------------------------------------------------------------------------

/** The input coordinate that padded coordinate p (begin already taken off) reads along a dim of n, or −1 (mode 0, the constant). */
__device__ __forceinline__ int64_t pad_source(int64_t p, int64_t n, int mode) {
  if (p >= 0 && p < n) return p;
  if (mode == 0 || n == 0) return -1;
  if (mode == 2) return p < 0 ? 0 : n - 1;
  return p < 0 ? -p : 2 * (n - 1) - p;
}

/** Offset in the dense input (dims sh.a) that output index i (dims sh.dims, leading pads sh.b) reads, or −1. */
__device__ __forceinline__ int64_t pad_offset(const Shape& sh, int64_t i, int mode) {
  int64_t off = 0, stride = 1;
  for (int d = sh.rank - 1; d >= 0; --d) {
    const int64_t o = i % sh.dims[d];
    i /= sh.dims[d];
    const int64_t p = pad_source(o - sh.b[d], sh.a[d], mode);
    if (p < 0) return -1;
    off += p * stride;
    stride *= sh.a[d];
  }
  return off;
}

template <typename T>
__global__ void pad_kernel(const T* x, T* out, Shape sh, int mode, float value, int64_t n) {
  GRID_LOOP(int64_t, i, n) {
    const int64_t off = pad_offset(sh, i, mode);
    st(out, i, off < 0 ? value : ld(x, off));
  }
}

/** acc[the element output i read] += g[i] (float32 acc, zeroed by the caller). */
template <typename T>
__global__ void pad_grad_kernel(const T* g, float* acc, Shape sh, int mode, int64_t n) {
  GRID_LOOP(int64_t, i, n) {
    const int64_t off = pad_offset(sh, i, mode);
    if (off >= 0) atomicAdd(acc + off, ld(g, i));
  }
}

// --- GatedUnit --------------------------------------------------------------------------------
// y = act(gate) · up, and its gradient (dgate = dy · up · act'(gate), dup = dy · act(gate)) in one
// pass each; the activation is a template argument (0 silu, 1 gelu_tanh, 2 gelu), float32 inside.

constexpr float GATED_SQRT_2_PI = 0.7978845608028654f;  // √(2/π)
constexpr float GATED_GELU_C = 0.044715f;

/** act(x) and, where `slope` is given, act'(x). */
template <int ACT>
__device__ __forceinline__ float gated_act(float x, float* slope) {
  if (ACT == 0) {
    const float sg = 1.f / (1.f + expf(-x));
    if (slope) *slope = sg * (1.f + x * (1.f - sg));
    return x * sg;
  } else if (ACT == 1) {
    const float t = tanhf(GATED_SQRT_2_PI * (x + GATED_GELU_C * x * x * x));
    if (slope) *slope = 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * GATED_SQRT_2_PI * (1.f + 3.f * GATED_GELU_C * x * x);
    return 0.5f * x * (1.f + t);
  } else {
    const float c = 0.5f * (1.f + erff(x * 0.7071067811865476f));
    if (slope) *slope = c + x * expf(-0.5f * x * x) * 0.3989422804014327f;
    return x * c;
  }
}

template <typename T, typename I, int ACT>
__global__ void gated_unit_kernel(const T* gate, const T* up, T* y, I n) {
  GRID_LOOP(I, i, n) st(y, i, gated_act<ACT>(ld(gate, i), nullptr) * ld(up, i));
}

/** Every element read before either is written: dgate or dup may be the buffer of an input. */
template <typename T, typename I, int ACT>
__global__ void gated_unit_grad_kernel(const T* dy, const T* gate, const T* up, T* dgate, T* dup, I n) {
  GRID_LOOP(I, i, n) {
    const float g = ld(dy, i), u = ld(up, i);
    float slope;
    const float a = gated_act<ACT>(ld(gate, i), &slope);
    st(dup, i, g * a);
    st(dgate, i, g * u * slope);
  }
}

inline int grid_for(int64_t n, int threads = 256) {
  const int64_t blocks = (n + threads - 1) / threads;
  return (int)(blocks < 65535 * 8 ? (blocks < 1 ? 1 : blocks) : 65535 * 8);
}

constexpr int64_t I32_LIMIT = (int64_t(1) << 31) - 1;

/** Largest offset Σ (dims − 1)·|stride| that strides reach over `sh`. */
inline int64_t reach(const Shape& sh, const int64_t* strides) {
  int64_t r = 0;
  for (int d = 0; d < sh.rank; ++d) r += (sh.dims[d] - 1) * (strides[d] < 0 ? -strides[d] : strides[d]);
  return r;
}

/** Row chunks of a channel reduction: ~1056 blocks over all channels, each at least 1024 elements. */
inline void channel_chunks(int64_t per, int64_t C, int64_t& chunk, int64_t& chunks) {
  const int64_t want = (1056 + C - 1) / C, most = (per + 1023) / 1024;
  int64_t k = want < most ? want : most;
  if (k < 1) k = 1;
  chunk = (per + k - 1) / k;
  chunks = (per + chunk - 1) / chunk;
}

}  // namespace

#define XDISPATCH(t, F) DISPATCH_FLOAT(t, T, F)
#define XDISPATCH_INDEX(small, F) \
  if (small) { using I = uint32_t; F; } else { using I = int64_t; F; }
#define XDISPATCH_WIDTH(t, F)                   \
  if ((t) == 0) { using T = float; F; }         \
  else if ((t) == 1) { using T = uint16_t; F; } \
  else if ((t) == 2) { using T = uint64_t; F; } \
  else { using T = uint8_t; F; }

void logic(int code, const uint8_t* a, const uint8_t* b, uint8_t* out, const Shape& sh, int64_t n, cudaStream_t s) {
  const bool small = n < I32_LIMIT && reach(sh, sh.a) < I32_LIMIT && reach(sh, sh.b) < I32_LIMIT;
  XDISPATCH_INDEX(small, (logic_kernel<I><<<grid_for(n), 256, 0, s>>>(code, a, b, out, sh, (I)n)));
  CHECK_LAUNCH();
}

void is_nan(DType t, const void* x, uint8_t* out, int64_t n, cudaStream_t s) {
  XDISPATCH(t, (is_nan_kernel<T><<<grid_for(n), 256, 0, s>>>((const T*)x, out, n)));
  CHECK_LAUNCH();
}

void gather_elements(int width, const void* data, const int64_t* idx, void* out, const Shape& sh, int64_t axisStride, int64_t axisDim,
                     int64_t n, cudaStream_t s) {
  const bool small = n < I32_LIMIT && reach(sh, sh.a) + (axisDim - 1) * axisStride < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH_WIDTH(width, (gather_elements_kernel<T, I><<<grid_for(n), 256, 0, s>>>(
                                                    (const T*)data, idx, (T*)out, sh, (I)axisStride, axisDim, (I)n))));
  CHECK_LAUNCH();
}

void scatter_elements_add(DType t, const void* g, const int64_t* idx, float* acc, const Shape& sh, int64_t axisStride, int64_t axisDim,
                          int64_t n, cudaStream_t s) {
  const bool small = n < I32_LIMIT && reach(sh, sh.a) + (axisDim - 1) * axisStride < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (scatter_elements_add_kernel<T, I><<<grid_for(n), 256, 0, s>>>(
                                          (const T*)g, idx, acc, sh, (I)axisStride, axisDim, (I)n))));
  CHECK_LAUNCH();
}

#define GATHER_ND_DISPATCH_IDX(idx32, F) \
  if (idx32) { using X = int32_t; F; } else { using X = int64_t; F; }

void gather_nd(int width, const void* data, const void* idx, bool idx32, void* out, const Shape& sh, int64_t batch, int64_t tuples,
               int64_t slice, int64_t batchStride, cudaStream_t s) {
  const int64_t n = batch * tuples * slice;
  if (n < 1) return;
  const bool small = n < I32_LIMIT && batch * batchStride < I32_LIMIT;
  GATHER_ND_DISPATCH_IDX(idx32, XDISPATCH_INDEX(small, XDISPATCH_WIDTH(width, (gather_nd_kernel<T, X, I><<<grid_for(n), 256, 0, s>>>(
                                                    (const T*)data, (const X*)idx, (T*)out, sh, (I)tuples, (I)slice, (I)batchStride, (I)n)))));
  CHECK_LAUNCH();
}

void gather_nd_add(DType t, const void* g, const void* idx, bool idx32, float* acc, const Shape& sh, int64_t batch, int64_t tuples,
                   int64_t slice, int64_t batchStride, cudaStream_t s) {
  const int64_t n = batch * tuples * slice;
  if (n < 1) return;
  const bool small = n < I32_LIMIT && batch * batchStride < I32_LIMIT;
  GATHER_ND_DISPATCH_IDX(idx32, XDISPATCH_INDEX(small, XDISPATCH(t, (gather_nd_add_kernel<T, X, I><<<grid_for(n), 256, 0, s>>>(
                                                    (const T*)g, (const X*)idx, acc, sh, (I)tuples, (I)slice, (I)batchStride, (I)n)))));
  CHECK_LAUNCH();
}

void trilu(int width, const void* x, void* out, int64_t n, int64_t rows, int64_t cols, int64_t k, bool upper, cudaStream_t s) {
  XDISPATCH_INDEX(n < I32_LIMIT, XDISPATCH_WIDTH(width, (trilu_kernel<T, I><<<grid_for(n), 256, 0, s>>>(
                                                           (const T*)x, (T*)out, (I)n, (I)rows, (I)cols, k, upper))));
  CHECK_LAUNCH();
}

void dropout(DType t, const void* x, void* y, uint8_t* mask, int64_t n, uint32_t state, uint64_t threshold, float scale, cudaStream_t s) {
  XDISPATCH(t, (dropout_kernel<T><<<grid_for(n), 256, 0, s>>>((const T*)x, (T*)y, mask, n, state, threshold, scale)));
  CHECK_LAUNCH();
}

/** Stage one (MODE as channel_partials_kernel) into fresh partials, stage two into out0 (and out1). */
template <int MODE>
static void channel_reduce(DType t, const void* x, const void* g, const float* mean, const float* var, float eps, float* out0, float* out1,
                           int64_t N, int64_t C, int64_t inner, float div, cudaStream_t s) {
  const int64_t per = N * inner;
  if (per < 1 || C < 1) throw std::runtime_error("BatchNormalization over an empty tensor");
  int64_t chunk, chunks;
  channel_chunks(per, C, chunk, chunks);
  float* partial = nullptr;
  CUDA_CHECK(cudaMallocAsync(&partial, 2 * C * chunks * sizeof(float), s));
  float* p1 = partial + C * chunks;
  const bool small = N * C * inner < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (channel_partials_kernel<MODE, T, I><<<(unsigned)(C * chunks), BN_THREADS, 0, s>>>(
                                          (const T*)x, (const T*)g, mean, var, eps, partial, p1, (I)C, (I)inner, (I)per, (I)chunk, (I)chunks))));
  CHECK_LAUNCH();
  channel_finish_kernel<<<grid_for(C), 256, 0, s>>>(partial, out0, C, chunks, div);
  CHECK_LAUNCH();
  if (MODE == 2) {
    channel_finish_kernel<<<grid_for(C), 256, 0, s>>>(p1, out1, C, chunks, div);
    CHECK_LAUNCH();
  }
  CUDA_CHECK(cudaFreeAsync(partial, s));
}

void bn_stats(DType t, const void* x, float* mean, float* var, int64_t N, int64_t C, int64_t inner, cudaStream_t s) {
  const float per = (float)(N * inner);
  channel_reduce<0>(t, x, nullptr, nullptr, nullptr, 0.f, mean, nullptr, N, C, inner, per, s);
  channel_reduce<1>(t, x, nullptr, mean, nullptr, 0.f, var, nullptr, N, C, inner, per, s);
}

void bn_forward(DType t, const void* x, const void* scale, const void* bias, const float* mean, const float* var, void* y, int64_t N,
                int64_t C, int64_t inner, float eps, cudaStream_t s) {
  const int64_t n = N * C * inner;
  XDISPATCH_INDEX(n < I32_LIMIT, XDISPATCH(t, (bn_forward_kernel<T, I><<<grid_for(n), 256, 0, s>>>(
                                                 (const T*)x, (const T*)scale, (const T*)bias, mean, var, (T*)y, (I)C, (I)inner, eps, (I)n))));
  CHECK_LAUNCH();
}

void bn_running(DType t, const void* rm, const void* rv, const float* mean, const float* var, void* rmOut, void* rvOut, int64_t C,
                float momentum, cudaStream_t s) {
  XDISPATCH(t, (bn_running_kernel<T><<<grid_for(C), 256, 0, s>>>((const T*)rm, (const T*)rv, mean, var, (T*)rmOut, (T*)rvOut, C, momentum)));
  CHECK_LAUNCH();
}

void bn_grad_sums(DType t, const void* g, const void* x, const float* mean, const float* var, float* sumG, float* sumGX, int64_t N,
                  int64_t C, int64_t inner, float eps, cudaStream_t s) {
  channel_reduce<2>(t, x, g, mean, var, eps, sumG, sumGX, N, C, inner, 1.f, s);
}

void bn_grad_input(DType t, const void* g, const void* x, const void* scale, const float* mean, const float* var, const float* sumG,
                   const float* sumGX, void* dx, int64_t N, int64_t C, int64_t inner, float eps, bool training, cudaStream_t s) {
  const int64_t n = N * C * inner;
  XDISPATCH_INDEX(n < I32_LIMIT, XDISPATCH(t, (bn_grad_input_kernel<T, I><<<grid_for(n), 256, 0, s>>>(
                                                 (const T*)g, (const T*)x, (const T*)scale, mean, var, sumG, sumGX, (T*)dx, (I)C, (I)inner,
                                                 (float)(N * inner), eps, training, (I)n))));
  CHECK_LAUNCH();
}

void im2col(int width, const void* x, void* col, int64_t images, int64_t C, const Window3& w, cudaStream_t s) {
  const Win v = win_of(w);
  const int64_t n = C * v.kSize * images * v.outSize;
  const bool small = n < I32_LIMIT && images * C * v.inSize < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH_WIDTH(width, (im2col_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)x, (T*)col, v, (I)images, (I)C, (I)n))));
  CHECK_LAUNCH();
}

void col2im(DType t, const void* col, void* dx, int64_t images, int64_t C, const Window3& w, cudaStream_t s) {
  const Win v = win_of(w);
  const int64_t n = images * C * v.inSize;
  const bool small = n < I32_LIMIT && C * v.kSize * images * v.outSize < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (col2im_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)col, (T*)dx, v, (I)images, (I)C, (I)n))));
  CHECK_LAUNCH();
}

void max_pool(DType t, const void* x, void* y, int64_t* indices, int64_t planes, const Window3& w, cudaStream_t s) {
  const Win v = win_of(w);
  const int64_t n = planes * v.outSize;
  const bool small = n < I32_LIMIT && planes * v.inSize < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (max_pool_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)x, (T*)y, indices, nullptr, v, (I)n))));
  CHECK_LAUNCH();
}

void max_pool_grad(DType t, const void* g, const void* x, void* dx, int64_t planes, const Window3& w, cudaStream_t s) {
  const Win v = win_of(w);
  const int64_t nout = planes * v.outSize, nin = planes * v.inSize;
  const bool small = nout < I32_LIMIT && nin < I32_LIMIT;
  // Each window's first maximum, then every input element gathers the windows that chose it: no atomics.
  int* arg = nullptr;
  CUDA_CHECK(cudaMallocAsync(&arg, (nout > 0 ? nout : 1) * sizeof(int), s));
  XDISPATCH_INDEX(small, XDISPATCH(t, (max_pool_kernel<T, I><<<grid_for(nout), 256, 0, s>>>((const T*)x, (T*)nullptr, nullptr, arg, v, (I)nout))));
  CHECK_LAUNCH();
  XDISPATCH_INDEX(small, XDISPATCH(t, (max_pool_grad_kernel<T, I><<<grid_for(nin), 256, 0, s>>>((const T*)g, arg, (T*)dx, v, (I)nin))));
  CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(arg, s));
}

void avg_pool(DType t, const void* x, void* y, int64_t planes, const Window3& w, bool includePad, cudaStream_t s) {
  const Win v = win_of(w);
  const int64_t n = planes * v.outSize;
  const bool small = n < I32_LIMIT && planes * v.inSize < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (avg_pool_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)x, (T*)y, v, includePad, (I)n))));
  CHECK_LAUNCH();
}

void avg_pool_grad(DType t, const void* g, void* dx, int64_t planes, const Window3& w, bool includePad, cudaStream_t s) {
  const Win v = win_of(w);
  const int64_t n = planes * v.inSize;
  const bool small = n < I32_LIMIT && planes * v.outSize < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (avg_pool_grad_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)g, (T*)dx, v, includePad, (I)n))));
  CHECK_LAUNCH();
}

void rmsnorm(DType t, const void* x, const void* gamma, void* y, int64_t rows, int64_t cols, int64_t gl, float eps, cudaStream_t s) {
  if (rows < 1) return;
  const unsigned blocks = (unsigned)((rows + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
  XDISPATCH(t, (rmsnorm_kernel<T><<<blocks, 32 * RMS_ROWS_PER_BLOCK, 0, s>>>((const T*)x, (const T*)gamma, (T*)y, rows, cols, gl, eps)));
  CHECK_LAUNCH();
}

void rmsnorm_grad_input(DType t, const void* g, const void* x, const void* gamma, void* dx, int64_t rows, int64_t cols, int64_t gl, float eps,
                        cudaStream_t s) {
  if (rows < 1) return;
  const unsigned blocks = (unsigned)((rows + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
  XDISPATCH(t, (rmsnorm_grad_input_kernel<T><<<blocks, 32 * RMS_ROWS_PER_BLOCK, 0, s>>>((const T*)g, (const T*)x, (const T*)gamma, (T*)dx, rows, cols, gl, eps)));
  CHECK_LAUNCH();
}

void rmsnorm_grad_params(DType t, const void* g, const void* x, void* dgamma, int64_t rows, int64_t cols, float eps, cudaStream_t s) {
  if (cols < 1) return;
  if (rows < 1) {
    fill(t, dgamma, cols, 0.f, s);
    return;
  }
  const int64_t bx = (cols + RMS_TILE - 1) / RMS_TILE;
  // About a thousand blocks in all, each chunk at least 64 rows.
  int64_t chunks = (1024 + bx - 1) / bx;
  const int64_t most = (rows + 63) / 64;
  if (chunks > most) chunks = most;
  if (chunks < 1) chunks = 1;
  const int64_t chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + chunk - 1) / chunk;
  float* inv = nullptr;
  float* partial = nullptr;
  CUDA_CHECK(cudaMallocAsync(&inv, rows * sizeof(float), s));
  CUDA_CHECK(cudaMallocAsync(&partial, chunks * cols * sizeof(float), s));
  const unsigned blocks = (unsigned)((rows + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
  XDISPATCH(t, (rms_inv_kernel<T><<<blocks, 32 * RMS_ROWS_PER_BLOCK, 0, s>>>((const T*)x, inv, rows, cols, eps)));
  CHECK_LAUNCH();
  XDISPATCH(t, (rmsnorm_grad_params_kernel<T><<<dim3((unsigned)bx, (unsigned)chunks), dim3(RMS_TILE, RMS_TILE_ROWS), 0, s>>>((const T*)g, (const T*)x, inv, partial, rows, cols, chunk)));
  CHECK_LAUNCH();
  XDISPATCH(t, (column_chunks_sum_kernel<T><<<grid_for(cols), 256, 0, s>>>(partial, (T*)dgamma, cols, chunks)));
  CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(partial, s));
  CUDA_CHECK(cudaFreeAsync(inv, s));
}

void rotary(DType t, const void* x, const void* cos, const void* sin, const int64_t* pos, void* out, int64_t B, int64_t S, int64_t H, int64_t D,
            int64_t sB, int64_t sS, int64_t sH, int64_t rd, bool interleaved, int64_t cacheRows, cudaStream_t s) {
  const int64_t n = B * S * H * D;
  if (n < 1) return;
  const bool small = n < I32_LIMIT && (B - 1) * sB + (S - 1) * sS + (H - 1) * sH + D < I32_LIMIT;
  XDISPATCH_INDEX(small, XDISPATCH(t, (rotary_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)x, (const T*)cos, (const T*)sin, pos, (T*)out,
                                          (I)S, (I)H, (I)D, (I)sB, (I)sS, (I)sH, (I)rd, interleaved, cacheRows, (I)n))));
  CHECK_LAUNCH();
}

void cumsum(DType t, const void* x, void* out, int64_t outer, int64_t dim, int64_t inner, bool exclusive, bool reverse, cudaStream_t s) {
  const int64_t lines = outer * inner;
  if (lines < 1 || dim < 1) return;
  XDISPATCH_INDEX(lines * dim < I32_LIMIT, XDISPATCH(t, (cumsum_kernel<T, I><<<grid_for(lines), 256, 0, s>>>((const T*)x, (T*)out, (I)outer, (I)dim, (I)inner,
                                                            exclusive, reverse))));
  CHECK_LAUNCH();
}

void pad(DType t, const void* x, void* out, const Shape& sh, int mode, float value, int64_t n, cudaStream_t s) {
  if (n < 1) return;
  XDISPATCH(t, (pad_kernel<T><<<grid_for(n), 256, 0, s>>>((const T*)x, (T*)out, sh, mode, value, n)));
  CHECK_LAUNCH();
}

void pad_grad(DType t, const void* g, float* acc, const Shape& sh, int mode, int64_t n, cudaStream_t s) {
  if (n < 1) return;
  XDISPATCH(t, (pad_grad_kernel<T><<<grid_for(n), 256, 0, s>>>((const T*)g, acc, sh, mode, n)));
  CHECK_LAUNCH();
}

#define GATED_DISPATCH_ACT(act, F)                  \
  if ((act) == 0) { constexpr int A = 0; F; }        \
  else if ((act) == 1) { constexpr int A = 1; F; }   \
  else if ((act) == 2) { constexpr int A = 2; F; }   \
  else throw std::invalid_argument("GatedUnit: activation code must be 0 (silu), 1 (gelu_tanh) or 2 (gelu)");

void gated_unit(DType t, const void* gate, const void* up, void* y, int64_t n, int act, cudaStream_t s) {
  if (n < 1) return;
  GATED_DISPATCH_ACT(act, XDISPATCH_INDEX(n < I32_LIMIT, XDISPATCH(t, (gated_unit_kernel<T, I, A><<<grid_for(n), 256, 0, s>>>(
                                                                        (const T*)gate, (const T*)up, (T*)y, (I)n)))));
  CHECK_LAUNCH();
}

void gated_unit_grad(DType t, const void* dy, const void* gate, const void* up, void* dgate, void* dup, int64_t n, int act, cudaStream_t s) {
  if (n < 1) return;
  GATED_DISPATCH_ACT(act, XDISPATCH_INDEX(n < I32_LIMIT, XDISPATCH(t, (gated_unit_grad_kernel<T, I, A><<<grid_for(n), 256, 0, s>>>(
                                                                        (const T*)dy, (const T*)gate, (const T*)up, (T*)dgate, (T*)dup, (I)n)))));
  CHECK_LAUNCH();
}

}  // namespace cleave
