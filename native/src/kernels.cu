#include "check.h"
#include "elem.cuh"
#include <type_traits>

#include "kernels.cuh"
#include "op_codes.h"

namespace cleave {

namespace {

struct Strides6 { int64_t v[MAX_RANK]; };

constexpr float SQRT_2_PI = 0.7978845608028654f;

// Codes are the registry's (src/core/ops/native_codes.ts, generated into op_codes.h); the host
// bindings refuse any other, so no default case is ever taken.
__device__ __forceinline__ float apply_unary(int code, float x, float a, float b) {
  switch (code) {
    case UNARY_NEG: return -x;
    case UNARY_ABS: return fabsf(x);
    case UNARY_EXP: return expf(x);
    case UNARY_LOG: return logf(x);
    case UNARY_SQRT: return sqrtf(x);
    case UNARY_RECIPROCAL: return 1.f / x;
    case UNARY_TANH: return tanhf(x);
    case UNARY_SIGMOID: return 1.f / (1.f + expf(-x));
    case UNARY_RELU: return x > 0.f ? x : 0.f;
    case UNARY_LEAKY_RELU: return x >= 0.f ? x : a * x;
    case UNARY_GELU: return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
    case UNARY_GELU_TANH: return 0.5f * x * (1.f + tanhf(SQRT_2_PI * (x + 0.044715f * x * x * x)));
    case UNARY_ERF: return erff(x);
    case UNARY_HARD_SIGMOID: return fminf(1.f, fmaxf(0.f, a * x + b));
    case UNARY_HARD_SWISH: return x * fminf(1.f, fmaxf(0.f, x / 6.f + 0.5f));
    case UNARY_FLOOR: return floorf(x);
    case UNARY_CEIL: return ceilf(x);
    // Clip: below a gives a, then above b gives b (b wins where a > b); NaN stays NaN.
    case UNARY_CLIP: { const float y = x < a ? a : x; return y > b ? b : y; }
    case UNARY_SIN: return sinf(x);
    case UNARY_COS: return cosf(x);
    default: return NAN;
  }
}

__device__ __forceinline__ float apply_binary(int code, float x, float y) {
  switch (code) {
    case BINARY_ADD: return x + y;
    case BINARY_SUB: return x - y;
    case BINARY_MUL: return x * y;
    case BINARY_DIV: return x / y;
    case BINARY_POW: return powf(x, y);
    case BINARY_MIN: return fminf(x, y);
    case BINARY_MAX: return fmaxf(x, y);
    default: return NAN;
  }
}

template <typename T>
__global__ void unary_kernel(int code, const T* in, T* out, int64_t n, float a, float b) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    st(out, i, apply_unary(code, ld(in, i), a, b));
}

template <typename T, typename I>
__global__ void binary_kernel(int code, const T* a, const T* b, T* out, Shape sh, I n) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    I ia, ib;
    operand_offsets(sh, i, ia, ib);
    st(out, i, apply_binary(code, ld(a, ia), ld(b, ib)));
  }
}

// Collapsed to one dimension (the common same-shape and scalar cases): no index arithmetic.
template <typename T, typename I>
__global__ void binary_flat_kernel(int code, const T* a, const T* b, T* out, I sa, I sb, I n) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x)
    st(out, i, apply_binary(code, ld(a, i * sa), ld(b, i * sb)));
}

/** Block-wide sum or max of one value per thread (blockDim a multiple of 32, ≤ 1024). */
template <bool MAX>
__device__ float block_reduce(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffff, v, o);
    v = MAX ? fmaxf(v, w) : v + w;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = threadIdx.x < warps ? part[threadIdx.x] : (MAX ? -INFINITY : 0.f);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) {
      const float w = __shfl_xor_sync(0xffffffff, v, o);
      v = MAX ? fmaxf(v, w) : v + w;
    }
  if (threadIdx.x == 0) part[0] = v;
  __syncthreads();
  const float r = part[0];
  __syncthreads();
  return r;
}

/** A row's max and Σ exp(x − max), by the whole block (softmax and cross-entropy). */
template <typename T>
__device__ void row_max_sumexp(const T* x, int64_t cols, float& mx, float& sum) {
  mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, ld(x, j));
  mx = block_reduce<true>(mx);
  sum = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += expf(ld(x, j) - mx);
  sum = block_reduce<false>(sum);
}

template <typename T>
__global__ void softmax_kernel(const T* in, T* out, int64_t cols, bool log_form) {
  const T* x = in + blockIdx.x * cols;
  T* y = out + blockIdx.x * cols;
  float mx, sum;
  row_max_sumexp(x, cols, mx, sum);
  const float lse = logf(sum);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float z = ld(x, j) - mx;
    st(y, j, log_form ? z - lse : expf(z) / sum);
  }
}

// Mean and 1/sqrt(var + eps) of one row, by the whole block; two passes, since one-pass
// sum-of-squares loses precision when the mean is large against the spread.
template <typename T>
__device__ void row_mean_inv(const T* xr, int64_t cols, float eps, float& mean, float& inv) {
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += ld(xr, j);
  mean = block_reduce<false>(s) / cols;
  float v = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float d = ld(xr, j) - mean;
    v += d * d;
  }
  inv = rsqrtf(block_reduce<false>(v) / cols + eps);
}

/** Warp-wide sum. */
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// LayerNorm rows of transformer width (up to a few thousand columns) are short work for a whole
// block: one warp per row needs no __syncthreads, and the row's repeat reads hit L1.
constexpr int LN_ROWS_PER_BLOCK = 8;

template <typename T>
__device__ __forceinline__ void warp_row_stats(const T* xr, int64_t cols, float eps, float& mean, float& inv) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
  for (int64_t j = lane; j < cols; j += 32) s += ld(xr, j);
  mean = warp_sum(s) / cols;
  float v = 0.f;
  for (int64_t j = lane; j < cols; j += 32) {
    const float d = ld(xr, j) - mean;
    v += d * d;
  }
  inv = rsqrtf(warp_sum(v) / cols + eps);
}

template <typename T>
__global__ void layernorm_warp_kernel(const T* x, const T* gamma, const T* beta, T* y, int64_t rows, int64_t cols, int64_t gl, int64_t bl, float eps) {
  const int64_t row = blockIdx.x * (int64_t)LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  float mean, inv;
  warp_row_stats(xr, cols, eps, mean, inv);
  for (int64_t j = threadIdx.x & 31; j < cols; j += 32) {
    const float g = gamma ? ld(gamma, gl == cols ? j : j % gl) : 1.f, b = beta ? ld(beta, bl == cols ? j : j % bl) : 0.f;
    st(yr, j, (ld(xr, j) - mean) * inv * g + b);
  }
}

template <typename T>
__global__ void layernorm_grad_input_warp_kernel(const T* g, const T* x, const T* gamma, T* dx, int64_t rows, int64_t cols, int64_t gl, float eps) {
  const int64_t row = blockIdx.x * (int64_t)LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const T* xr = x + row * cols;
  const T* gr = g + row * cols;
  T* dr = dx + row * cols;
  float mean, inv;
  warp_row_stats(xr, cols, eps, mean, inv);
  float a = 0.f, b = 0.f;
  for (int64_t j = lane; j < cols; j += 32) {
    const float dxh = ld(gr, j) * ld(gamma, gl == cols ? j : j % gl);
    a += dxh;
    b += dxh * (ld(xr, j) - mean) * inv;
  }
  a = warp_sum(a) / cols;
  b = warp_sum(b) / cols;
  for (int64_t j = lane; j < cols; j += 32) {
    const float xh = (ld(xr, j) - mean) * inv;
    st(dr, j, inv * (ld(gr, j) * ld(gamma, gl == cols ? j : j % gl) - a - xh * b));
  }
}

template <typename T>
__global__ void row_stats_warp_kernel(const T* x, float* mean, float* inv, int64_t rows, int64_t cols, float eps) {
  const int64_t row = blockIdx.x * (int64_t)LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
  if (row >= rows) return;
  float m, r;
  warp_row_stats(x + row * cols, cols, eps, m, r);
  if ((threadIdx.x & 31) == 0) {
    mean[row] = m;
    inv[row] = r;
  }
}

// --- vectorized maps ---------------------------------------------------------------------------
// Contiguous operands move 16 bytes per load (8 bfloat16 or 4 float32): scalar 2-byte loads leave
// most of the memory bandwidth unused. Operand modes: 0 contiguous like the output, 1 one scalar,
// 2 a row of `cols` repeated down the rows (a bias).
template <typename T> struct Vec { static constexpr int N = 16 / sizeof(T); };

template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float* v) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < Vec<T>::N; ++k) v[k] = ld(e, k);
}

template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float* v) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < Vec<T>::N; ++k) st(e, k, v[k]);
  *reinterpret_cast<uint4*>(p) = raw;
}

template <typename T>
__device__ __forceinline__ void load_operand(const T* p, int mode, int64_t i, int64_t cols, float* v) {
  if (mode == 0) load_vec(p + i, v);
  else if (mode == 2) load_vec(p + i % cols, v);
  else {
    const float x = ld(p, 0);
#pragma unroll
    for (int k = 0; k < Vec<T>::N; ++k) v[k] = x;
  }
}

template <typename T>
__global__ void binary_vec_kernel(int code, const T* a, const T* b, T* out, int ma, int mb, int64_t cols, int64_t n) {
  constexpr int V = Vec<T>::N;
  float x[V], y[V];
  for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V; i < n; i += (int64_t)gridDim.x * blockDim.x * V) {
    load_operand(a, ma, i, cols, x);
    load_operand(b, mb, i, cols, y);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] = apply_binary(code, x[k], y[k]);
    store_vec(out + i, x);
  }
}

template <typename T>
__global__ void unary_vec_kernel(int code, const T* in, T* out, int64_t n, float a, float b) {
  constexpr int V = Vec<T>::N;
  float x[V];
  for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V; i < n; i += (int64_t)gridDim.x * blockDim.x * V) {
    load_vec(in + i, x);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] = apply_unary(code, x[k], a, b);
    store_vec(out + i, x);
  }
}

template <typename T>
__global__ void layernorm_kernel(const T* x, const T* gamma, const T* beta, T* y, int64_t cols, int64_t gl, int64_t bl, float eps) {
  const T* xr = x + blockIdx.x * cols;
  T* yr = y + blockIdx.x * cols;
  float mean, inv;
  row_mean_inv(xr, cols, eps, mean, inv);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float g = gamma ? ld(gamma, j % gl) : 1.f, b = beta ? ld(beta, j % bl) : 0.f;
    st(yr, j, (ld(xr, j) - mean) * inv * g + b);
  }
}

template <typename T, typename I>
__global__ void strided_copy_kernel(const T* in, T* out, Shape sh, I base, I n) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    I rem = i, off = base;
    for (int d = sh.rank - 1; d >= 0; --d) {
      const I m = (I)sh.dims[d];
      off += (rem % m) * (I)sh.a[d];
      rem /= m;
    }
    out[i] = in[off];
  }
}

template <typename T, typename I>
__global__ void gather_kernel(const T* data, const int64_t* idx, T* out, I outer, I dim, I nidx, I inner) {
  const I n = outer * nidx * inner;
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    const I q = i % inner, r = i / inner, j = r % nidx, o = r / nidx;
    int64_t k = idx[j];
    if (k < 0) k += dim;
    out[i] = data[(o * dim + (I)k) * inner + q];
  }
}

template <typename T, typename I>
__global__ void where_kernel(const uint8_t* c, const T* x, const T* y, T* out, Shape sh, Strides6 cs, I n) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    I rem = i, ic = 0, ix = 0, iy = 0;
    for (int d = sh.rank - 1; d >= 0; --d) {
      const I m = (I)sh.dims[d];
      const I k = rem % m;
      rem /= m;
      ic += k * (I)cs.v[d];
      ix += k * (I)sh.a[d];
      iy += k * (I)sh.b[d];
    }
    out[i] = c[ic] ? x[ix] : y[iy];
  }
}

template <typename T, typename I>
__global__ void copy_region_kernel(const T* in, T* out, Shape sh, Strides6 os, I ibase, I obase, I n) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    I rem = i, io = ibase, oo = obase;
    for (int d = sh.rank - 1; d >= 0; --d) {
      const I m = (I)sh.dims[d];
      const I k = rem % m;
      rem /= m;
      io += k * (I)sh.a[d];
      oo += k * (I)os.v[d];
    }
    out[oo] = in[io];
  }
}

/**
 * Rows of 16-byte units from one strided layout to another (a Split's slices, a Concat's pieces,
 * any copy whose innermost run is contiguous on both sides): one load and one store per 16 bytes,
 * where the element-wise copy moves 2 or 4.
 */
__global__ void copy_rows_vec_kernel(const uint4* in, uint4* out, int64_t rows, int64_t units, int64_t in_stride, int64_t out_stride) {
  const int64_t n = rows * units;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / units, u = i - r * units;
    out[r * out_stride + u] = in[r * in_stride + u];
  }
}

template <typename T>
__global__ void fill_kernel(T* out, int64_t n, float v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) st(out, i, v);
}

// One block per output element: its threads stride over the reduced positions, then a block-wide
// reduction (float32, a fixed order for a fixed launch: deterministic).
template <typename T>
__global__ void reduce_kernel(int op, const T* in, T* out, Shape outer, Shape red, int64_t nout, int64_t nred) {
  for (int64_t j = blockIdx.x; j < nout; j += gridDim.x) {
    int64_t rem = j, base = 0;
    for (int d = outer.rank - 1; d >= 0; --d) {
      base += (rem % outer.dims[d]) * outer.a[d];
      rem /= outer.dims[d];
    }
    float acc = op == REDUCE_MAX ? -INFINITY : 0.f;
    for (int64_t r = threadIdx.x; r < nred; r += blockDim.x) {
      int64_t q = r, off = base;
      for (int d = red.rank - 1; d >= 0; --d) {
        off += (q % red.dims[d]) * red.a[d];
        q /= red.dims[d];
      }
      const float v = ld(in, off);
      acc = op == REDUCE_MAX ? fmaxf(acc, v) : acc + v;
    }
    acc = op == REDUCE_MAX ? block_reduce<true>(acc) : block_reduce<false>(acc);
    if (threadIdx.x == 0) st(out, j, op == REDUCE_MEAN ? acc / nred : acc);
  }
}

/** Σ x² over n elements into one float (many blocks, one atomic add per block). */
template <typename T, typename I>
__global__ void compare_kernel(int code, const T* a, const T* b, uint8_t* out, Shape sh, I n) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    I ia, ib;
    operand_offsets(sh, i, ia, ib);
    const float x = ld(a, ia), y = ld(b, ib);
    bool r;
    switch (code) {
      case COMPARE_EQUAL: r = x == y; break;
      case COMPARE_LESS: r = x < y; break;
      case COMPARE_GREATER: r = x > y; break;
      case COMPARE_LESS_EQUAL: r = x <= y; break;
      case COMPARE_GREATER_EQUAL: r = x >= y; break;
      case COMPARE_AND: r = x != 0.f && y != 0.f; break;
      case COMPARE_OR: r = x != 0.f || y != 0.f; break;
      default: r = false;
    }
    out[i] = r ? 1 : 0;
  }
}

template <typename T>
__global__ void scatter_add_kernel(const T* g, const int64_t* idx, float* acc, int64_t outer, int64_t dim, int64_t nidx, int64_t inner) {
  const int64_t n = outer * nidx * inner;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t q = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);
    int64_t k = idx[j];
    if (k < 0) k += dim;
    atomicAdd(acc + (o * dim + k) * inner + q, ld(g, i));
  }
}

template <typename T>
__global__ void layernorm_grad_input_kernel(const T* g, const T* x, const T* gamma, T* dx, int64_t cols, int64_t gl, float eps) {
  const T* xr = x + blockIdx.x * cols;
  const T* gr = g + blockIdx.x * cols;
  T* dr = dx + blockIdx.x * cols;
  float mean, inv;
  row_mean_inv(xr, cols, eps, mean, inv);
  float a = 0.f, b = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float dxh = ld(gr, j) * ld(gamma, j % gl);
    a += dxh;
    b += dxh * (ld(xr, j) - mean) * inv;
  }
  a = block_reduce<false>(a) / cols;
  b = block_reduce<false>(b) / cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float xh = (ld(xr, j) - mean) * inv;
    st(dr, j, inv * (ld(gr, j) * ld(gamma, j % gl) - a - xh * b));
  }
}

// Per-row statistics first (one block per row), then one thread per column sums over rows.
template <typename T>
__global__ void row_stats_kernel(const T* x, float* mean, float* inv, int64_t cols, float eps) {
  const T* xr = x + blockIdx.x * cols;
  float m, r;
  row_mean_inv(xr, cols, eps, m, r);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    inv[blockIdx.x] = r;
  }
}

// Column sums over many rows: a block owns 32 columns and one chunk of rows; its 32 × 8 threads
// read rows coalesced (a warp spans 32 columns of one row), fold their rows, then the 8 partial
// sums of each column meet in shared memory. Each chunk writes its own float32 partial; a second
// kernel adds the chunks in order, so results do not depend on scheduling (no atomics).
constexpr int COL_TILE = 32, COL_ROWS = 8;

template <typename T>
__global__ void layernorm_grad_params_kernel(const T* g, const T* x, const float* mean, const float* inv, float* partial, int64_t rows,
                                             int64_t cols, int64_t chunk) {
  const int64_t c = blockIdx.x * (int64_t)COL_TILE + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float a = 0.f, b = 0.f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += COL_ROWS) {
      const float gv = ld(g, r * cols + c);
      a += gv * (ld(x, r * cols + c) - mean[r]) * inv[r];
      b += gv;
    }
  __shared__ float sa[COL_ROWS][COL_TILE], sb[COL_ROWS][COL_TILE];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < COL_ROWS; ++k) {
      a += sa[k][threadIdx.x];
      b += sb[k][threadIdx.x];
    }
    partial[blockIdx.y * 2 * cols + c] = a;
    partial[blockIdx.y * 2 * cols + cols + c] = b;
  }
}

/** out[a, c] = op over r of in[a, r, c] (reduced axis in the middle, contiguous columns): stage one. */
template <typename T>
__global__ void column_reduce_kernel(int op, const T* in, float* partial, int64_t R, int64_t C, int64_t chunk) {
  const int64_t c = blockIdx.x * (int64_t)COL_TILE + threadIdx.x;
  const int64_t a = blockIdx.z;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(R, r0 + chunk);
  float acc = op == REDUCE_MAX ? -INFINITY : 0.f;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += COL_ROWS) {
      const float v = ld(in, (a * R + r) * C + c);
      acc = op == REDUCE_MAX ? fmaxf(acc, v) : acc + v;
    }
  __shared__ float sh[COL_ROWS][COL_TILE];
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int k = 1; k < COL_ROWS; ++k) acc = op == REDUCE_MAX ? fmaxf(acc, sh[k][threadIdx.x]) : acc + sh[k][threadIdx.x];
    partial[(a * gridDim.y + blockIdx.y) * C + c] = acc;
  }
}

/**
 * Stage two: out[j] = op over the `chunks` partials of column j, in order (j over `lists` × `n`);
 * partial (l, k, c) sits at l·lstride + k·kstride + c.
 */
template <typename T>
__global__ void sum_chunks_kernel(int op, const float* partial, T* out, int64_t lists, int64_t n, int64_t chunks, int64_t lstride,
                                  int64_t kstride, float scale) {
  const int64_t total = lists * n;
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < total; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t l = j / n, c = j % n;
    float acc = op == REDUCE_MAX ? -INFINITY : 0.f;
    for (int64_t k = 0; k < chunks; ++k) {
      const float v = partial[l * lstride + k * kstride + c];
      acc = op == REDUCE_MAX ? fmaxf(acc, v) : acc + v;
    }
    st(out, j, acc * scale);
  }
}

template <typename T>
__global__ void sce_forward_kernel(const T* sc, const int64_t* labels, float* loss, float* weight, int64_t cols, int64_t ignore) {
  const T* x = sc + blockIdx.x * cols;
  const int64_t y = labels[blockIdx.x];
  float mx, sum;
  row_max_sumexp(x, cols, mx, sum);
  if (threadIdx.x == 0) {
    const bool skip = y == ignore;
    loss[blockIdx.x] = skip ? 0.f : mx + logf(sum) - ld(x, y);
    weight[blockIdx.x] = skip ? 0.f : 1.f;
  }
}

template <typename T>
__global__ void sce_backward_kernel(const T* sc, const int64_t* labels, const float* up, const float* wsum, T* ds, int64_t cols, int64_t ignore, int mean) {
  const T* x = sc + blockIdx.x * cols;
  T* d = ds + blockIdx.x * cols;
  const int64_t y = labels[blockIdx.x];
  float mx, sum;
  row_max_sumexp(x, cols, mx, sum);
  const float scale = y == ignore ? 0.f : (mean ? (wsum[0] > 0.f ? up[0] / wsum[0] : 0.f) : up[0]);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) st(d, j, (expf(ld(x, j) - mx) / sum - (j == y ? 1.f : 0.f)) * scale);
}

__device__ __forceinline__ float gelu_slope(float v, bool tanh_form) {
  if (tanh_form) {
    const float t = tanhf(SQRT_2_PI * (v + 0.044715f * v * v * v));
    return 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * SQRT_2_PI * (1.f + 3.f * 0.044715f * v * v);
  }
  return 0.5f * (1.f + erff(v * 0.7071067811865476f)) + v * expf(-0.5f * v * v) * 0.3989422804014327f;
}

template <typename T>
__global__ void gelu_grad_kernel(const T* g, const T* x, T* out, int64_t n, bool tanh_form) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    st(out, i, ld(g, i) * gelu_slope(ld(x, i), tanh_form));
}

template <typename T>
__global__ void gelu_grad_vec_kernel(const T* g, const T* x, T* out, int64_t n, bool tanh_form) {
  constexpr int V = Vec<T>::N;
  float gv[V], xv[V];
  for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V; i < n; i += (int64_t)gridDim.x * blockDim.x * V) {
    load_vec(g + i, gv);
    load_vec(x + i, xv);
#pragma unroll
    for (int k = 0; k < V; ++k) gv[k] *= gelu_slope(xv[k], tanh_form);
    store_vec(out + i, gv);
  }
}

template <typename A, typename B>
__global__ void cast_kernel(const A* in, B* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) st(out, i, ld(in, i));
}

/** One AdamW step of one element: moments, then the decayed and updated weight. */
struct AdamStep {
  float lr, b1, b2, eps, wd, bc1, bc2, gscale;
  __device__ float operator()(float w, float g, float& m, float& v) const {
    g *= gscale;
    m = b1 * m + (1.f - b1) * g;
    v = b2 * v + (1.f - b2) * g * g;
    return w * (1.f - lr * wd) - (lr / bc1) * (m / (sqrtf(v / bc2) + eps));
  }
};

/**
 * AdamW over every parameter in one launch: each block takes one chunk of one tensor from the
 * chunk table; `copy` (when set) receives the updated weight in the compute dtype, so the 16-bit
 * copy needs no launch of its own either. The update only moves memory (28 bytes an element, 30
 * with the copy), so where the tensor's arrays allow it a thread moves four elements a load.
 */
template <typename H>
__global__ void adamw_multi_kernel(const AdamTensor* ts, const int64_t* chunks, int64_t chunk, AdamStep step) {
  const AdamTensor a = ts[chunks[2 * blockIdx.x]];
  const int64_t start = chunks[2 * blockIdx.x + 1], end = min(a.n, start + chunk);
  int64_t tail = start;
  // Chunks start at multiples of `chunk` (a multiple of 4), so 16-byte aligned arrays stay aligned.
  const uintptr_t bases = reinterpret_cast<uintptr_t>(a.w) | reinterpret_cast<uintptr_t>(a.g) | reinterpret_cast<uintptr_t>(a.m) | reinterpret_cast<uintptr_t>(a.v);
  if ((bases & 15) == 0 && (chunk & 3) == 0) {
    tail = start + ((end - start) & ~int64_t(3));
    for (int64_t i = start + 4 * (int64_t)threadIdx.x; i < tail; i += 4 * (int64_t)blockDim.x) {
      float4 w = *reinterpret_cast<const float4*>(a.w + i), m = *reinterpret_cast<const float4*>(a.m + i), v = *reinterpret_cast<const float4*>(a.v + i);
      const float4 g = *reinterpret_cast<const float4*>(a.g + i);
      w.x = step(w.x, g.x, m.x, v.x);
      w.y = step(w.y, g.y, m.y, v.y);
      w.z = step(w.z, g.z, m.z, v.z);
      w.w = step(w.w, g.w, m.w, v.w);
      *reinterpret_cast<float4*>(a.w + i) = w;
      *reinterpret_cast<float4*>(a.m + i) = m;
      *reinterpret_cast<float4*>(a.v + i) = v;
      if (a.copy) {
        H* c = static_cast<H*>(a.copy);
        st(c, i, w.x);
        st(c, i + 1, w.y);
        st(c, i + 2, w.z);
        st(c, i + 3, w.w);
      }
    }
  }
  for (int64_t i = tail + threadIdx.x; i < end; i += blockDim.x) {
    float m = a.m[i], v = a.v[i];
    const float w = step(a.w[i], a.g[i], m, v);
    a.m[i] = m;
    a.v[i] = v;
    a.w[i] = w;
    if (a.copy) st(static_cast<H*>(a.copy), i, w);
  }
}

/**
 * Σ g² over the gradients of an AdamW table in one launch (the gradient norm): block b sums chunk b
 * and adds it into out[0]; only `g` and `n` of each entry are read.
 */
__global__ void sumsq_multi_kernel(const AdamTensor* ts, const int64_t* chunks, int64_t chunk, float* out) {
  const AdamTensor a = ts[chunks[2 * blockIdx.x]];
  const int64_t start = chunks[2 * blockIdx.x + 1], end = min(a.n, start + chunk);
  float acc = 0.f;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) acc += a.g[i] * a.g[i];
  acc = block_reduce<false>(acc);
  if (threadIdx.x == 0) atomicAdd(out, acc);
}

inline int grid_for(int64_t n, int threads = 256) {
  const int64_t blocks = (n + threads - 1) / threads;
  return (int)(blocks < 65535 * 8 ? (blocks < 1 ? 1 : blocks) : 65535 * 8);
}

inline int row_threads(int64_t cols) {
  int t = 32;
  while (t < cols && t < 1024) t <<= 1;
  return t;
}

constexpr int64_t I32_LIMIT = (int64_t(1) << 31) - 1;

/** Largest offset `base + Σ (dims − 1)·stride` that strides reach over `sh` (strides ≥ 0). */
inline int64_t reach(const Shape& sh, const int64_t* strides, int64_t base = 0) {
  int64_t r = base;
  for (int d = 0; d < sh.rank; ++d) r += (sh.dims[d] - 1) * (strides[d] < 0 ? -strides[d] : strides[d]);
  return r;
}

/** True when the element count and every operand offset fit 32-bit index arithmetic. */
inline bool fits32(const Shape& sh, int64_t n, int64_t base = 0) {
  return n < I32_LIMIT && reach(sh, sh.a, base) < I32_LIMIT && reach(sh, sh.b) < I32_LIMIT;
}

}  // namespace

#define DISPATCH(t, F) DISPATCH_FLOAT(t, T, F)
// Index width: 32-bit where it fits.
#define DISPATCH_INDEX(small, F) \
  if (small) { using I = uint32_t; F; } else { using I = int64_t; F; }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
inline int vec_width(DType t) { return t == F32 ? 4 : 8; }

void unary(int code, DType t, const void* in, void* out, int64_t n, float alpha, float beta, cudaStream_t s) {
  const int V = vec_width(t);
  if (n % V == 0 && aligned16(in) && aligned16(out)) {
    DISPATCH(t, (unary_vec_kernel<T><<<grid_for(n / V), 256, 0, s>>>(code, (const T*)in, (T*)out, n, alpha, beta)));
  } else {
    DISPATCH(t, (unary_kernel<T><<<grid_for(n), 256, 0, s>>>(code, (const T*)in, (T*)out, n, alpha, beta)));
  }
  CHECK_LAUNCH();
}

/**
 * How a vectorized map can read an operand of the (collapsed) output shape: 0 contiguous, 1 a
 * scalar, 2 a row repeated down the rows; −1 when it cannot.
 */
inline int operand_mode(const Shape& sh, const int64_t* st) {
  if (sh.rank == 1) return st[0] == 1 ? 0 : st[0] == 0 ? 1 : -1;
  if (sh.rank != 2) return -1;
  if (st[1] == 1) return st[0] == sh.dims[1] ? 0 : st[0] == 0 ? 2 : -1;
  return st[0] == 0 && st[1] == 0 ? 1 : -1;
}

void binary(int code, DType t, const void* a, const void* b, void* out, const Shape& shape, int64_t n, cudaStream_t s) {
  const int V = vec_width(t);
  const int ma = operand_mode(shape, shape.a), mb = operand_mode(shape, shape.b);
  const int64_t cols = shape.dims[shape.rank - 1];
  if (ma >= 0 && mb >= 0 && n % V == 0 && cols % V == 0 && aligned16(out) && (ma == 1 || aligned16(a)) && (mb == 1 || aligned16(b))) {
    DISPATCH(t, (binary_vec_kernel<T><<<grid_for(n / V), 256, 0, s>>>(code, (const T*)a, (const T*)b, (T*)out, ma, mb, cols, n)));
    CHECK_LAUNCH();
    return;
  }
  const bool small = fits32(shape, n);
  if (shape.rank == 1) {
    DISPATCH_INDEX(small, DISPATCH(t, (binary_flat_kernel<T, I><<<grid_for(n), 256, 0, s>>>(code, (const T*)a, (const T*)b, (T*)out, (I)shape.a[0], (I)shape.b[0], (I)n))));
  } else {
    DISPATCH_INDEX(small, DISPATCH(t, (binary_kernel<T, I><<<grid_for(n), 256, 0, s>>>(code, (const T*)a, (const T*)b, (T*)out, shape, (I)n))));
  }
  CHECK_LAUNCH();
}

void softmax(DType t, const void* in, void* out, int64_t rows, int64_t cols, bool log, cudaStream_t s) {
  DISPATCH(t, (softmax_kernel<T><<<(unsigned)rows, row_threads(cols), 0, s>>>((const T*)in, (T*)out, cols, log)));
  CHECK_LAUNCH();
}

void layernorm(DType t, const void* x, const void* gamma, const void* beta, void* y, int64_t rows, int64_t cols, int64_t gl,
               int64_t bl, float eps, cudaStream_t s) {
  if (cols <= 4096) {
    const unsigned blocks = (unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    DISPATCH(t, (layernorm_warp_kernel<T><<<blocks, 32 * LN_ROWS_PER_BLOCK, 0, s>>>((const T*)x, (const T*)gamma, (const T*)beta, (T*)y, rows, cols, gl, bl, eps)));
  } else {
    DISPATCH(t, (layernorm_kernel<T><<<(unsigned)rows, row_threads(cols), 0, s>>>((const T*)x, (const T*)gamma, (const T*)beta, (T*)y, cols, gl, bl, eps)));
  }
  CHECK_LAUNCH();
}

// Copies move bytes, so they take any element width: 0 four bytes, 1 two, 2 eight, 3 one.
#define DISPATCH_BYTES(t, F)                 \
  if ((t) == 0) { using T = float; F; }      \
  else if ((t) == 1) { using T = uint16_t; F; } \
  else if ((t) == 2) { using T = uint64_t; F; } \
  else { using T = uint8_t; F; }

/** Element width in bytes of a copy code (copies take any width: 0 four bytes, 1 two, 2 eight, 3 one). */
inline int64_t copy_width(int t) { return t == 0 ? 4 : t == 1 ? 2 : t == 2 ? 8 : 1; }

/**
 * The 16-byte row copy where it applies: at most two collapsed dims, the inner one contiguous on
 * both sides, and every row start 16-byte aligned. Strides and bases in elements of width w.
 */
static bool copy_rows_vec(int t, const void* in, void* out, const Shape& sh, int64_t in_row, int64_t out_row, int64_t ibase, int64_t obase, cudaStream_t s) {
  const int64_t w = copy_width(t);
  const int64_t rows = sh.rank == 2 ? sh.dims[0] : 1, cols = sh.dims[sh.rank - 1];
  if (sh.rank > 2 || (cols * w) % 16 || (in_row * w) % 16 || (out_row * w) % 16 || (ibase * w) % 16 || (obase * w) % 16) return false;
  const char* src = static_cast<const char*>(in) + ibase * w;
  char* dst = static_cast<char*>(out) + obase * w;
  if (!aligned16(src) || !aligned16(dst)) return false;
  const int64_t units = cols * w / 16;
  copy_rows_vec_kernel<<<grid_for(rows * units), 256, 0, s>>>(reinterpret_cast<const uint4*>(src), reinterpret_cast<uint4*>(dst), rows, units, in_row * w / 16, out_row * w / 16);
  CHECK_LAUNCH();
  return true;
}

void strided_copy(DType t, const void* in, void* out, const Shape& shape, int64_t base, int64_t n, cudaStream_t s) {
  if (shape.a[shape.rank - 1] == 1 && copy_rows_vec(t, in, out, shape, shape.rank == 2 ? shape.a[0] : 0, shape.rank == 2 ? shape.dims[1] : 0, base, 0, s)) return;
  const bool small = n < I32_LIMIT && reach(shape, shape.a, base) < I32_LIMIT;
  DISPATCH_INDEX(small, DISPATCH_BYTES(t, (strided_copy_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)in, (T*)out, shape, (I)base, (I)n))));
  CHECK_LAUNCH();
}

void gather(DType t, const void* data, const int64_t* idx, void* out, int64_t outer, int64_t dim, int64_t nidx, int64_t inner, cudaStream_t s) {
  const int64_t n = outer * nidx * inner;
  const bool small = n < I32_LIMIT && outer * dim * inner < I32_LIMIT;
  DISPATCH_INDEX(small, DISPATCH(t, (gather_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)data, idx, (T*)out, (I)outer, (I)dim, (I)nidx, (I)inner))));
  CHECK_LAUNCH();
}

void where(DType t, const uint8_t* cond, const void* x, const void* y, void* out, const Shape& shape, const int64_t* cstrides, int64_t n, cudaStream_t s) {
  Strides6 cs{};
  for (int d = 0; d < shape.rank; ++d) cs.v[d] = cstrides[d];
  const bool small = fits32(shape, n) && reach(shape, cs.v) < I32_LIMIT;
  DISPATCH_INDEX(small, DISPATCH(t, (where_kernel<T, I><<<grid_for(n), 256, 0, s>>>(cond, (const T*)x, (const T*)y, (T*)out, shape, cs, (I)n))));
  CHECK_LAUNCH();
}

void copy_region(DType t, const void* in, void* out, const Shape& sh, const int64_t* ostrides, int64_t ibase, int64_t obase, int64_t n, cudaStream_t s) {
  if (sh.a[sh.rank - 1] == 1 && ostrides[sh.rank - 1] == 1 &&
      copy_rows_vec(t, in, out, sh, sh.rank == 2 ? sh.a[0] : 0, sh.rank == 2 ? ostrides[0] : 0, ibase, obase, s)) return;
  Strides6 os{};
  for (int d = 0; d < sh.rank; ++d) os.v[d] = ostrides[d];
  const bool small = n < I32_LIMIT && reach(sh, sh.a, ibase) < I32_LIMIT && reach(sh, os.v, obase) < I32_LIMIT;
  DISPATCH_INDEX(small, DISPATCH_BYTES(t, (copy_region_kernel<T, I><<<grid_for(n), 256, 0, s>>>((const T*)in, (T*)out, sh, os, (I)ibase, (I)obase, (I)n))));
  CHECK_LAUNCH();
}

void fill(DType t, void* out, int64_t n, float value, cudaStream_t s) {
  DISPATCH(t, (fill_kernel<T><<<grid_for(n), 256, 0, s>>>((T*)out, n, value)));
  CHECK_LAUNCH();
}

/** Row chunks for a column reduction: enough blocks to fill the card, at least 32 rows each. */
inline int64_t column_chunks(int64_t R, int64_t blocks) {
  const int64_t want = (528 + blocks - 1) / blocks, most = (R + 31) / 32;
  int64_t c = want < most ? want : most;
  if (c < 1) c = 1;
  return c > 65535 ? 65535 : c;
}

void reduce(int op, DType t, const void* in, void* out, const Shape& outer, const Shape& red, int64_t nout, int64_t nred, cudaStream_t s) {
  // Reduced rows above contiguous kept columns ([A,] R, C → [A,] C): bias and broadcast gradients.
  // One block per output would read a column with a stride per thread; tile columns instead.
  const bool column = red.rank == 1 && outer.a[outer.rank - 1] == 1 && red.a[0] == outer.dims[outer.rank - 1] &&
                      (outer.rank == 1 || (outer.rank == 2 && outer.a[0] == red.dims[0] * red.a[0] && outer.dims[0] <= 65535));
  if (column && nred > 1) {
    const int64_t C = outer.dims[outer.rank - 1], A = outer.rank == 2 ? outer.dims[0] : 1, R = nred;
    const int64_t bx = (C + COL_TILE - 1) / COL_TILE;
    int64_t chunks = column_chunks(R, bx * A);
    const int64_t chunk = (R + chunks - 1) / chunks;
    chunks = (R + chunk - 1) / chunk;
    float* partial = nullptr;
    CUDA_CHECK(cudaMallocAsync(&partial, A * chunks * C * sizeof(float), s));
    DISPATCH(t, (column_reduce_kernel<T><<<dim3((unsigned)bx, (unsigned)chunks, (unsigned)A), dim3(COL_TILE, COL_ROWS), 0, s>>>(op, (const T*)in, partial, R, C, chunk)));
    CHECK_LAUNCH();
    DISPATCH(t, (sum_chunks_kernel<T><<<grid_for(A * C), 256, 0, s>>>(op, partial, (T*)out, A, C, chunks, chunks * C, C, op == REDUCE_MEAN ? 1.f / R : 1.f)));
    CHECK_LAUNCH();
    CUDA_CHECK(cudaFreeAsync(partial, s));
    return;
  }
  const unsigned blocks = (unsigned)(nout < 65535 * 16 ? nout : 65535 * 16);
  const int threads = nred >= 1024 ? 1024 : row_threads(nred);
  DISPATCH(t, (reduce_kernel<T><<<blocks, threads, 0, s>>>(op, (const T*)in, (T*)out, outer, red, nout, nred)));
  CHECK_LAUNCH();
}


void compare(int code, DType t, const void* a, const void* b, uint8_t* out, const Shape& shape, int64_t n, cudaStream_t s) {
  DISPATCH_INDEX(fits32(shape, n), DISPATCH(t, (compare_kernel<T, I><<<grid_for(n), 256, 0, s>>>(code, (const T*)a, (const T*)b, out, shape, (I)n))));
  CHECK_LAUNCH();
}

void scatter_add(DType t, const void* g, const int64_t* idx, float* acc, int64_t outer, int64_t dim, int64_t nidx, int64_t inner, cudaStream_t s) {
  const int64_t n = outer * nidx * inner;
  DISPATCH(t, (scatter_add_kernel<T><<<grid_for(n), 256, 0, s>>>((const T*)g, idx, acc, outer, dim, nidx, inner)));
  CHECK_LAUNCH();
}

void layernorm_grad_input(DType t, const void* g, const void* x, const void* gamma, void* dx, int64_t rows, int64_t cols, int64_t gl, float eps, cudaStream_t s) {
  if (cols <= 4096) {
    const unsigned blocks = (unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    DISPATCH(t, (layernorm_grad_input_warp_kernel<T><<<blocks, 32 * LN_ROWS_PER_BLOCK, 0, s>>>((const T*)g, (const T*)x, (const T*)gamma, (T*)dx, rows, cols, gl, eps)));
  } else {
    DISPATCH(t, (layernorm_grad_input_kernel<T><<<(unsigned)rows, row_threads(cols), 0, s>>>((const T*)g, (const T*)x, (const T*)gamma, (T*)dx, cols, gl, eps)));
  }
  CHECK_LAUNCH();
}

void layernorm_grad_params(DType t, const void* g, const void* x, void* dgamma, void* dbeta, int64_t rows, int64_t cols, float eps, cudaStream_t s) {
  const int64_t bx = (cols + COL_TILE - 1) / COL_TILE;
  int64_t chunks = column_chunks(rows, bx);
  const int64_t chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + chunk - 1) / chunk;
  float* stats = nullptr;
  float* partial = nullptr;
  CUDA_CHECK(cudaMallocAsync(&stats, 2 * rows * sizeof(float), s));
  CUDA_CHECK(cudaMallocAsync(&partial, chunks * 2 * cols * sizeof(float), s));
  if (cols <= 4096) {
    const unsigned blocks = (unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    DISPATCH(t, (row_stats_warp_kernel<T><<<blocks, 32 * LN_ROWS_PER_BLOCK, 0, s>>>((const T*)x, stats, stats + rows, rows, cols, eps)));
  } else {
    DISPATCH(t, (row_stats_kernel<T><<<(unsigned)rows, row_threads(cols), 0, s>>>((const T*)x, stats, stats + rows, cols, eps)));
  }
  CHECK_LAUNCH();
  DISPATCH(t, (layernorm_grad_params_kernel<T><<<dim3((unsigned)bx, (unsigned)chunks), dim3(COL_TILE, COL_ROWS), 0, s>>>((const T*)g, (const T*)x, stats, stats + rows, partial, rows, cols, chunk)));
  CHECK_LAUNCH();
  // The partials hold [chunk][dgamma | dbeta]: each list of `cols` sums goes to its own output.
  DISPATCH(t, (sum_chunks_kernel<T><<<grid_for(cols), 256, 0, s>>>(0, partial, (T*)dgamma, 1, cols, chunks, 0, 2 * cols, 1.f)));
  CHECK_LAUNCH();
  DISPATCH(t, (sum_chunks_kernel<T><<<grid_for(cols), 256, 0, s>>>(0, partial + cols, (T*)dbeta, 1, cols, chunks, 0, 2 * cols, 1.f)));
  CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(partial, s));
  CUDA_CHECK(cudaFreeAsync(stats, s));
}

void sce_forward(DType t, const void* scores, const int64_t* labels, float* loss, float* weight, int64_t rows, int64_t cols, int64_t ignore, cudaStream_t s) {
  DISPATCH(t, (sce_forward_kernel<T><<<(unsigned)rows, row_threads(cols), 0, s>>>((const T*)scores, labels, loss, weight, cols, ignore)));
  CHECK_LAUNCH();
}

void sce_backward(DType t, const void* scores, const int64_t* labels, const float* upstream, const float* wsum, void* ds, int64_t rows, int64_t cols, int64_t ignore, int mean, cudaStream_t s) {
  DISPATCH(t, (sce_backward_kernel<T><<<(unsigned)rows, row_threads(cols), 0, s>>>((const T*)scores, labels, upstream, wsum, (T*)ds, cols, ignore, mean)));
  CHECK_LAUNCH();
}

void gelu_grad(DType t, const void* g, const void* x, void* out, int64_t n, bool tanh_form, cudaStream_t s) {
  const int V = vec_width(t);
  if (n % V == 0 && aligned16(g) && aligned16(x) && aligned16(out)) {
    DISPATCH(t, (gelu_grad_vec_kernel<T><<<grid_for(n / V), 256, 0, s>>>((const T*)g, (const T*)x, (T*)out, n, tanh_form)));
  } else {
    DISPATCH(t, (gelu_grad_kernel<T><<<grid_for(n), 256, 0, s>>>((const T*)g, (const T*)x, (T*)out, n, tanh_form)));
  }
  CHECK_LAUNCH();
}

// Casts that involve integers or bools go through double (exact for int32 and for int64 up to
// 2^53), truncating toward zero into integers and testing ≠ 0 into bools, as the CPU kernel does.
template <typename T> __device__ __forceinline__ double ld_any(const T* p, int64_t i) { return (double)ld(p, i); }
template <> __device__ __forceinline__ double ld_any<int64_t>(const int64_t* p, int64_t i) { return (double)p[i]; }
template <> __device__ __forceinline__ double ld_any<int32_t>(const int32_t* p, int64_t i) { return (double)p[i]; }
template <> __device__ __forceinline__ double ld_any<uint8_t>(const uint8_t* p, int64_t i) { return p[i] ? 1.0 : 0.0; }
template <typename T> __device__ __forceinline__ void st_any(T* p, int64_t i, double v) { st(p, i, (float)v); }
template <> __device__ __forceinline__ void st_any<int64_t>(int64_t* p, int64_t i, double v) { p[i] = (int64_t)trunc(v); }
template <> __device__ __forceinline__ void st_any<int32_t>(int32_t* p, int64_t i, double v) { p[i] = (int32_t)trunc(v); }
template <> __device__ __forceinline__ void st_any<uint8_t>(uint8_t* p, int64_t i, double v) { p[i] = v != 0.0; }

template <typename A, typename B>
__global__ void cast_any_kernel(const A* in, B* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) st_any(out, i, ld_any(in, i));
}

// Integer to integer without double (exact beyond 2^53; narrowing wraps, as the CPU kernel does).
template <typename A, typename B>
__global__ void cast_int_kernel(const A* in, B* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    if constexpr (std::is_same_v<B, uint8_t>) out[i] = in[i] != 0;
    else out[i] = (B)in[i];
  }
}

#define DISPATCH_INT(t, T, F)                                 \
  if ((t) == ::cleave::I64) { using T = int64_t; F; }         \
  else if ((t) == ::cleave::I32) { using T = int32_t; F; }    \
  else { using T = uint8_t; F; }

#define DISPATCH_ANY(t, T, F)                                 \
  if ((t) == ::cleave::I64) { using T = int64_t; F; }         \
  else if ((t) == ::cleave::I32) { using T = int32_t; F; }    \
  else if ((t) == ::cleave::BOOL) { using T = uint8_t; F; }   \
  else DISPATCH_FLOAT(t, T, F)

void cast(DType from, DType to, const void* in, void* out, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const auto is_float = [](DType t) { return t == F32 || t == BF16 || t == F16; };
  if (is_float(from) && is_float(to)) {
    DISPATCH_FLOAT(from, A, DISPATCH_FLOAT(to, B, (cast_kernel<A, B><<<grid_for(n), 256, 0, s>>>((const A*)in, (B*)out, n))));
  } else if (!is_float(from) && !is_float(to)) {
    DISPATCH_INT(from, A, DISPATCH_INT(to, B, (cast_int_kernel<A, B><<<grid_for(n), 256, 0, s>>>((const A*)in, (B*)out, n))));
  } else {
    DISPATCH_ANY(from, A, DISPATCH_ANY(to, B, (cast_any_kernel<A, B><<<grid_for(n), 256, 0, s>>>((const A*)in, (B*)out, n))));
  }
  CHECK_LAUNCH();
}

void sumsq_multi(const AdamTensor* tensors, const int64_t* chunks, int64_t nchunks, int64_t chunk, float* out, cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float), s));
  if (nchunks <= 0) return;
  sumsq_multi_kernel<<<(unsigned)nchunks, 256, 0, s>>>(tensors, chunks, chunk, out);
  CHECK_LAUNCH();
}

void adamw_multi(const AdamTensor* tensors, const int64_t* chunks, int64_t nchunks, int64_t chunk, DType copy, float lr, float b1, float b2,
                 float eps, float wd, float bc1, float bc2, float gscale, cudaStream_t s) {
  if (nchunks <= 0) return;
  DISPATCH(copy, (adamw_multi_kernel<T><<<(unsigned)nchunks, 256, 0, s>>>(tensors, chunks, chunk, AdamStep{lr, b1, b2, eps, wd, bc1, bc2, gscale})));
  CHECK_LAUNCH();
}


}  // namespace cleave
