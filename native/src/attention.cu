// Flash-attention style forward and backward passes. Fast path: bfloat16, head size 64 or 128, mma.sync
// m16n8k16 tensor-core tiles (sm_80+), cp.async double-buffered shared memory. Everything else: one warp
// per row in float32 arithmetic, streaming keys (or queries) through an online softmax.
#include <cuda_bf16.h>

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "attention.cuh"
#include "check.h"
#include "elem.cuh"

namespace cleave {

namespace {

using bf16 = __nv_bfloat16;

constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
constexpr int MAX_DH = 256;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Generic path: one warp per query row (forward, dQ) or key row (dK, dV). A lane owns one key (query) of
// each chunk of 32 for the dot products, and head dimensions d = lane + 32·r for the accumulators.
// The warps of a block take consecutive rows (of one (b, h) but where a block straddles two), so the
// key and value rows they stream are mostly shared through L1.
// ---------------------------------------------------------------------------------------------------

/** The first key query i sees: i − window + 1 under a sliding window of `window` keys (0: no window). */
__device__ __forceinline__ int first_key(int i, int window) { return window > 0 ? max(0, i - window + 1) : 0; }

constexpr int GW = 8;                    // warps per block
constexpr int GR = MAX_DH / 32;          // accumulator slots per lane

/** The bias on the scores, where one is given: row i of (b, h) at bias + b·bB + h·bH + i·Tk (strides 0 broadcast). */
struct Bias {
  const void* p;
  int64_t bB, bH;
  int Tk;
  template <typename T>
  __device__ __forceinline__ const T* row(int b, int h, int i) const {
    return p ? (const T*)p + (int64_t)b * bB + (int64_t)h * bH + (int64_t)i * Tk : nullptr;
  }
};

template <typename T>
__global__ void __launch_bounds__(GW * 32) fwd_generic(const T* q, const T* k, const T* v, int64_t sB, int64_t sT, int64_t kB,
                                                       int64_t kT, T* out, float* lse, int B, int Tn, int Tk, int H, int G, int Dh,
                                                       float scale, bool causal, int window, Bias bias) {
  __shared__ float sq[GW][MAX_DH];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * GW + warp;
  if (r >= (int64_t)B * H * Tn) return;  // whole warps only; no block-wide barrier below
  const int i = (int)(r % Tn), bh = (int)(r / Tn), b = bh / H, h = bh % H;
  const int64_t base = (int64_t)b * sB + (int64_t)h * Dh, kbase = (int64_t)b * kB + (int64_t)(h / G) * Dh;
  for (int d = lane; d < Dh; d += 32) sq[warp][d] = ld(q, base + (int64_t)i * sT + d) * scale;
  __syncwarp();
  float o[GR];
#pragma unroll
  for (int c = 0; c < GR; ++c) o[c] = 0.f;
  float m = -INFINITY, l = 0.f;
  const T* brow = bias.row<T>(b, h, i);
  const int nkeys = causal ? i + 1 : Tk, jlo = first_key(i, window);
  for (int j0 = jlo; j0 < nkeys; j0 += 32) {
    const int j = j0 + lane;
    float sc = -INFINITY;
    if (j < nkeys) {
      const T* kr = k + kbase + (int64_t)j * kT;
      float a = 0.f;
      for (int d = 0; d < Dh; ++d) a += sq[warp][d] * ld(kr, d);
      sc = brow ? a + ld(brow, j) : a;
    }
    // Finite without a bias (lane 0's key is in range); a bias of −∞ on every key so far leaves it −∞.
    const float mn = fmaxf(m, warp_max(sc));
    const float p = mn == -INFINITY ? 0.f : expf(sc - mn), alpha = mn == -INFINITY ? 1.f : expf(m - mn);
    l = l * alpha + warp_sum(p);
    m = mn;
#pragma unroll
    for (int c = 0; c < GR; ++c) o[c] *= alpha;
    const int nv = min(32, nkeys - j0);
    for (int jj = 0; jj < nv; ++jj) {
      const float pj = __shfl_sync(0xffffffff, p, jj);
      const T* vr = v + kbase + (int64_t)(j0 + jj) * kT;
#pragma unroll
      for (int c = 0; c < GR; ++c)
        if (lane + 32 * c < Dh) o[c] += pj * ld(vr, lane + 32 * c);
    }
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;  // a row without weights gives zeros
  T* orow = out + (((int64_t)b * Tn + i) * H + h) * Dh;
#pragma unroll
  for (int c = 0; c < GR; ++c)
    if (lane + 32 * c < Dh) st(orow, lane + 32 * c, o[c] * inv);
  if (lane == 0) lse[r] = l > 0.f ? m + logf(l) : -INFINITY;
}

/** Dd[b, h, t] = Σ_d dout[b, t, h, d] · out[b, t, h, d] (one warp per row). */
template <typename T>
__global__ void rowdot_kernel(const T* dout, const T* out, float* Dd, int Tn, int H, int Dh, int64_t rows) {
  const int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  float a = 0.f;
  for (int d = lane; d < Dh; d += 32) a += ld(dout, r * Dh + d) * ld(out, r * Dh + d);
  a = warp_sum(a);
  const int h = (int)(r % H), t = (int)((r / H) % Tn);
  const int64_t b = r / ((int64_t)H * Tn);
  if (lane == 0) Dd[(b * H + h) * Tn + t] = a;
}

template <typename T>
__global__ void __launch_bounds__(GW * 32) dq_generic(const T* q, const T* k, const T* v, int64_t sB, int64_t sT, int64_t kB,
                                                      int64_t kT, const T* dout, const float* lse, const float* Dd, T* dq, int B,
                                                      int Tn, int Tk, int H, int G, int Dh, float scale, bool causal, int window,
                                                      Bias bias, T* dscores) {
  __shared__ float sq[GW][MAX_DH], sdo[GW][MAX_DH];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * GW + warp;
  if (r >= (int64_t)B * H * Tn) return;
  const int i = (int)(r % Tn), bh = (int)(r / Tn), b = bh / H, h = bh % H;
  const int64_t base = (int64_t)b * sB + (int64_t)h * Dh, orow = (((int64_t)b * Tn + i) * H + h) * Dh;
  const int64_t kbase = (int64_t)b * kB + (int64_t)(h / G) * Dh;
  for (int d = lane; d < Dh; d += 32) {
    sq[warp][d] = ld(q, base + (int64_t)i * sT + d);
    sdo[warp][d] = ld(dout, orow + d);
  }
  __syncwarp();
  const float L = lse[r], Di = Dd[r];
  float acc[GR];
#pragma unroll
  for (int c = 0; c < GR; ++c) acc[c] = 0.f;
  const T* brow = bias.row<T>(b, h, i);
  // dscores of this row, zero-filled before: written here for the keys the row sees (dq's pass owns the rows).
  T* dsrow = dscores ? dscores + ((int64_t)bh * Tn + i) * Tk : nullptr;
  const int nkeys = L == -INFINITY ? 0 : causal ? i + 1 : Tk, jlo = first_key(i, window);
  for (int j0 = jlo; j0 < nkeys; j0 += 32) {
    const int j = j0 + lane;
    float ds = 0.f;
    if (j < nkeys) {
      const T* kr = k + kbase + (int64_t)j * kT;
      const T* vr = v + kbase + (int64_t)j * kT;
      float sc = 0.f, dp = 0.f;
      for (int d = 0; d < Dh; ++d) {
        sc += sq[warp][d] * ld(kr, d);
        dp += sdo[warp][d] * ld(vr, d);
      }
      ds = expf(sc * scale + (brow ? ld(brow, j) : 0.f) - L) * (dp - Di);
      if (dsrow) st(dsrow, j, ds);
    }
    const int nv = min(32, nkeys - j0);
    for (int jj = 0; jj < nv; ++jj) {
      const float dsj = __shfl_sync(0xffffffff, ds, jj);
      const T* kr = k + kbase + (int64_t)(j0 + jj) * kT;
#pragma unroll
      for (int c = 0; c < GR; ++c)
        if (lane + 32 * c < Dh) acc[c] += dsj * ld(kr, lane + 32 * c);
    }
  }
#pragma unroll
  for (int c = 0; c < GR; ++c)
    if (lane + 32 * c < Dh) st(dq, orow + lane + 32 * c, acc[c] * scale);
}

/** dK, dV of one key row per warp; a KV head shared by G query heads sums their contributions. */
template <typename T>
__global__ void __launch_bounds__(GW * 32) dkdv_generic(const T* q, const T* k, const T* v, int64_t sB, int64_t sT, int64_t kB,
                                                        int64_t kT, const T* dout, const float* lse, const float* Dd, T* dk, T* dv,
                                                        int B, int Tn, int Tk, int H, int G, int Dh, float scale, bool causal,
                                                        int window, Bias bias) {
  __shared__ float sk[GW][MAX_DH], sv[GW][MAX_DH];
  const int Hk = H / G;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * GW + warp;
  if (r >= (int64_t)B * Hk * Tk) return;
  const int j = (int)(r % Tk), bhk = (int)(r / Tk), b = bhk / Hk, hk = bhk % Hk;
  const int64_t kbase = (int64_t)b * kB + (int64_t)hk * Dh;
  const int64_t ostride = (int64_t)H * Dh;
  for (int d = lane; d < Dh; d += 32) {
    sk[warp][d] = ld(k, kbase + (int64_t)j * kT + d);
    sv[warp][d] = ld(v, kbase + (int64_t)j * kT + d);
  }
  __syncwarp();
  float ak[GR], av[GR];
#pragma unroll
  for (int c = 0; c < GR; ++c) ak[c] = av[c] = 0.f;
  const int iend = window > 0 ? min(Tn, j + window) : Tn;  // the last query that still sees key j, + 1
  for (int gi = 0; gi < G; ++gi) {
    const int h = hk * G + gi;
    const int64_t base = (int64_t)b * sB + (int64_t)h * Dh, obase = (int64_t)b * Tn * H * Dh + (int64_t)h * Dh;
    const float* Lrow = lse + ((int64_t)b * H + h) * Tn;
    const float* Drow = Dd + ((int64_t)b * H + h) * Tn;
    const T* bcol = bias.row<T>(b, h, 0);  // column j of the bias: bcol[i·Tk + j]
    for (int i0 = causal ? j : 0; i0 < iend; i0 += 32) {
      const int i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i < iend && Lrow[i] != -INFINITY) {
        const T* qr = q + base + (int64_t)i * sT;
        const T* gr = dout + obase + (int64_t)i * ostride;
        float sc = 0.f, dp = 0.f;
        for (int d = 0; d < Dh; ++d) {
          sc += ld(qr, d) * sk[warp][d];
          dp += ld(gr, d) * sv[warp][d];
        }
        p = expf(sc * scale + (bcol ? ld(bcol, (int64_t)i * Tk + j) : 0.f) - Lrow[i]);
        ds = p * (dp - Drow[i]);
      }
      const int nv = min(32, iend - i0);
      for (int ii = 0; ii < nv; ++ii) {
        const float pi = __shfl_sync(0xffffffff, p, ii), dsi = __shfl_sync(0xffffffff, ds, ii);
        const T* qr = q + base + (int64_t)(i0 + ii) * sT;
        const T* gr = dout + obase + (int64_t)(i0 + ii) * ostride;
#pragma unroll
        for (int c = 0; c < GR; ++c)
          if (lane + 32 * c < Dh) {
            av[c] += pi * ld(gr, lane + 32 * c);
            ak[c] += dsi * ld(qr, lane + 32 * c);
          }
      }
    }
  }
  const int64_t orow = (((int64_t)b * Tk + j) * Hk + hk) * Dh;
#pragma unroll
  for (int c = 0; c < GR; ++c)
    if (lane + 32 * c < Dh) {
      st(dk, orow + lane + 32 * c, ak[c] * scale);
      st(dv, orow + lane + 32 * c, av[c]);
    }
}

// ---------------------------------------------------------------------------------------------------
// Tensor-core path (bf16, Dh ∈ {64, 128}). Fragment layouts are those of mma.m16n8k16 (.row.col): with
// g = lane / 4 and c = lane % 4, a thread holds accumulator rows g and g + 8, columns 2c and 2c + 1 of
// each 8-wide n-tile; a 16 × 16 A tile is 4 registers (rows g / g+8 × k 2c / 2c+8). An accumulator pair of
// n-tiles therefore is, once packed to bf16, the A operand of the next product (P·V, dS·K) without
// leaving registers. Shared tiles are row-major with rows padded by 8 elements (16 bytes), which makes
// the 8 row addresses of every ldmatrix fall in distinct banks.
// ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// cp.async and bf16 mma.sync need sm_80. Below that (a CLEAVE_CUDA_ARCH build for older cards) they
// compile to nothing: use_mma never launches the tensor-core kernels there.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define CLEAVE_PRE_SM80 1
#endif

/** 16 bytes global → shared, asynchronously; rows past the end are zero-filled (src size 0, nothing read). */
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
#ifndef CLEAVE_PRE_SM80
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
#endif
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
#ifndef CLEAVE_PRE_SM80
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifndef CLEAVE_PRE_SM80
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/** c += a · b for one 16 × 8 tile (k = 16), bf16 inputs, float32 accumulation. */
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifndef CLEAVE_PRE_SM80
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

/** 2^x; ex2.approx gives 2^-inf = +0, which the masking relies on. */
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/** Accumulator pair (n-tiles 2j, 2j+1) → the A operand covering those 16 columns as k. */
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2(lo[0], lo[1]);
  a[1] = pack2(lo[2], lo[3]);
  a[2] = pack2(hi[0], hi[1]);
  a[3] = pack2(hi[2], hi[3]);
}

// Lane addresses for ldmatrix.x4 (element offsets within a padded tile of row stride LDS):
//  a_off: the 16 × 16 A tile at rows r0.., columns c0.. (matrices: rows 0-7 / 8-15 × columns 0-7 / 8-15).
//  b_off: B = tileᵀ for two n-tiles, the tile's rows being n (e.g. K in Q·Kᵀ): registers {0,1} serve
//         n-tile rows r0..r0+7, {2,3} rows r0+8..r0+15.
//  bt_off: B = tile itself, rows being k (e.g. V in P·V), via .trans: {0,1} serve columns c0..c0+7,
//          {2,3} columns c0+8..c0+15.
template <int LDS> __device__ __forceinline__ int a_off(int lane, int r0, int c0) {
  return (r0 + (lane & 15)) * LDS + c0 + (lane >> 4) * 8;
}
template <int LDS> __device__ __forceinline__ int b_off(int lane, int r0, int c0) {
  return (r0 + ((lane >> 4) << 3) + (lane & 7)) * LDS + c0 + ((lane >> 3) & 1) * 8;
}
template <int LDS> __device__ __forceinline__ int bt_off(int lane, int r0, int c0) {
  return (r0 + (((lane >> 3) & 1) << 3) + (lane & 7)) * LDS + c0 + (lane >> 4) * 8;
}

/** ROWS × D tile, rows row0.. of a row-major source with row stride rs, into padded shared memory. */
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t rs, int row0, int Tn) {
  constexpr int CPR = D / 8, RPI = THREADS / CPR;  // 16-byte chunks per row; rows per pass
  static_assert(THREADS % CPR == 0 && ROWS % RPI == 0, "tile chunks must divide evenly among the threads");
  const int r = threadIdx.x / CPR, cc = (threadIdx.x % CPR) * 8;
  const bf16* sp = src + (int64_t)(row0 + r) * rs + cc;
  bf16* dp = dst + r * (D + 8) + cc;
#pragma unroll
  for (int i = 0; i < ROWS / RPI; ++i) {
    const bool ok = row0 + r + i * RPI < Tn;
    cp_async16(dp + i * RPI * (D + 8), ok ? sp + (int64_t)i * RPI * rs : src, ok);
  }
}

// Forward: a block owns BR = 16·WARPS query rows of one (b, h), each warp 16 of them, and streams the key
// blocks (BC = 64) through double-buffered shared memory with an online softmax in the log2 domain.
template <int D>
struct Fwd {
  static constexpr int WARPS = 8, THREADS = WARPS * 32, BR = 16 * WARPS, BC = 64, SUB = 32, LDS = D + 8;
  static constexpr size_t SMEM = (size_t)(BR + 4 * BC) * LDS * sizeof(bf16);
};

template <int D>
__global__ void __launch_bounds__(Fwd<D>::THREADS, 2)
    fwd_mma(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, int64_t sB, int64_t sT, int64_t kB,
            int64_t kT, bf16* __restrict__ out, float* __restrict__ lse, int Tn, int H, int G, float sl2, bool causal, int window) {
  using C = Fwd<D>;
  constexpr int BR = C::BR, BC = C::BC, SUB = C::SUB, LDS = C::LDS, NT = SUB / 8, DT = D / 8;
  extern __shared__ uint4 smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + BR * LDS;      // two buffers of BC rows
  bf16* sV = sK + 2 * BC * LDS;  // two buffers of BC rows
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int qb = gridDim.y - 1 - blockIdx.y;  // causal: the longest rows go first
  const int row0 = qb * BR;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tc = lane & 3;
  const int wrow = row0 + warp * 16;
  const int64_t base = (int64_t)b * sB + (int64_t)h * D, kbase = (int64_t)b * kB + (int64_t)(h / G) * D;
  const int nkb_all = (Tn + BC - 1) / BC;
  const int nkb = causal ? min(nkb_all, (row0 + BR - 1) / BC + 1) : nkb_all;
  const int kb0 = first_key(row0, window) / BC;  // a window: key tiles before the block's first row's keys are skipped

  load_tile<BR, D, C::THREADS>(sQ, q + base, sT, row0, Tn);
  load_tile<BC, D, C::THREADS>(sK, k + kbase, kT, kb0 * BC, Tn);
  load_tile<BC, D, C::THREADS>(sV, v + kbase, kT, kb0 * BC, Tn);

  float o[DT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const uint32_t qa = smem_addr(sQ + a_off<LDS>(lane, warp * 16, 0));

  for (int kb = kb0; kb < nkb; ++kb) {
    cp_async_wait_all();
    __syncthreads();  // tile kb visible to all; everyone is done with the buffer the next loads overwrite
    const int cur = (kb - kb0) & 1;
    if (kb + 1 < nkb) {
      const int nb = cur ^ 1;
      load_tile<BC, D, C::THREADS>(sK + nb * BC * LDS, k + kbase, kT, (kb + 1) * BC, Tn);
      load_tile<BC, D, C::THREADS>(sV + nb * BC * LDS, v + kbase, kT, (kb + 1) * BC, Tn);
    }
    if (wrow >= Tn) continue;
    const uint32_t kt = smem_addr(sK + cur * BC * LDS), vt = smem_addr(sV + cur * BC * LDS);
    // The online softmax advances SUB keys at a time: 16 score registers instead of 32 keep the kernel
    // near 128 registers (two blocks per SM); ptxas reports 8 bytes of spill for D = 128, 0 for D = 64.
#pragma unroll 1
    for (int sub = 0; sub < BC / SUB; ++sub) {
      const int key0 = kb * BC + sub * SUB;
      if (causal && key0 > wrow + 15) break;  // this and later sub-tiles are masked for all 16 rows
      if (key0 + SUB <= first_key(wrow, window)) continue;  // below the window of all 16 rows
      float s[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        ldsm4(a, qa + kk * 32);
#pragma unroll
        for (int np = 0; np < SUB / 16; ++np) {
          uint32_t bb[4];
          ldsm4(bb, kt + 2 * b_off<LDS>(lane, sub * SUB + np * 16, kk * 16));
          mma(s[2 * np], a, bb[0], bb[1]);
          mma(s[2 * np + 1], a, bb[2], bb[3]);
        }
      }

      const bool masked = key0 + SUB > Tn || (causal && key0 + SUB - 1 > wrow) || key0 < first_key(wrow + 15, window);
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[n][e] * sl2;
          if (masked) {
            const int key = key0 + n * 8 + tc * 2 + (e & 1), row = wrow + g + (e >> 1) * 8;
            if (key >= Tn || (causal && key > row) || key < first_key(row, window)) x = -INFINITY;
          }
          s[n][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      float mref[2], alpha[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
        const float mn = fmaxf(m[i], mx[i]);
        mref[i] = mn == -INFINITY ? 0.f : mn;  // a row with no key yet: keep exp2 away from -inf - -inf
        alpha[i] = ex2(m[i] - mref[i]);
        m[i] = mn;
      }
      float rs[2] = {0.f, 0.f};
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = ex2(s[n][e] - mref[e >> 1]);
          s[n][e] = p;
          rs[e >> 1] += p;
        }
#pragma unroll
      for (int i = 0; i < 2; ++i) l[i] = l[i] * alpha[i] + rs[i];
#pragma unroll
      for (int n = 0; n < DT; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }

#pragma unroll
      for (int kc = 0; kc < SUB / 16; ++kc) {
        uint32_t a[4];
        acc_to_a(a, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t bb[4];
          ldsm4_t(bb, vt + 2 * bt_off<LDS>(lane, sub * SUB + kc * 16, dp * 16));
          mma(o[2 * dp], a, bb[0], bb[1]);
          mma(o[2 * dp + 1], a, bb[2], bb[3]);
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
    const int row = wrow + g + i * 8;
    if (row < Tn) {
      const float inv = 1.f / l[i];
      __nv_bfloat162* orow = reinterpret_cast<__nv_bfloat162*>(out + (((int64_t)b * Tn + row) * H + h) * D + tc * 2);
#pragma unroll
      for (int n = 0; n < DT; ++n) orow[n * 4] = __floats2bfloat162_rn(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
      if (tc == 0) lse[(int64_t)bh * Tn + row] = (m[i] + __log2f(l[i])) * LN2;
    }
  }
}

// Backward, key side: a block owns BK = 64 keys (16 per warp) and streams query tiles (BQ = 64) of Q, dO,
// lse and rowsum(dO∘O), accumulating dV = Pᵀ dO and dK = scale · dSᵀ Q in registers.
template <int D>
struct Bwd {
  static constexpr int WARPS = 4, THREADS = WARPS * 32, BK = 16 * WARPS, BQ = 64, LDS = D + 8;
  static constexpr size_t SMEM_KV = (size_t)(2 * BK + 4 * BQ) * LDS * sizeof(bf16) + 4 * BQ * sizeof(float);
  static constexpr size_t SMEM_Q = (size_t)(2 * BQ + 4 * BK) * LDS * sizeof(bf16);
};

template <int D>
__global__ void __launch_bounds__(Bwd<D>::THREADS, 2)
    dkdv_mma(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, int64_t sB, int64_t sT, int64_t kB,
             int64_t kT, const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ Dd,
             bf16* __restrict__ dk, bf16* __restrict__ dv, int Tn, int H, int G, float sl2, float scale, bool causal, int window) {
  using C = Bwd<D>;
  constexpr int BK = C::BK, BQ = C::BQ, LDS = C::LDS, NT = BQ / 8, DT = D / 8;
  extern __shared__ uint4 smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + BK * LDS;
  bf16* sQ = sV + BK * LDS;      // two buffers of BQ rows
  bf16* sO = sQ + 2 * BQ * LDS;  // dO, two buffers of BQ rows
  float* sL = reinterpret_cast<float*>(sO + 2 * BQ * LDS);  // lse, two buffers
  float* sD = sL + 2 * BQ;                                  // rowsum(dO∘O), two buffers
  // A block owns keys of one KV head, which G query heads read: it runs the query tiles of each in turn.
  const int Hk = H / G, bhk = blockIdx.x, b = bhk / Hk, hk = bhk % Hk;
  const int key0 = blockIdx.y * BK;  // causal: low key blocks see the most queries and go first
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tc = lane & 3;
  const int wkey = key0 + warp * 16;
  const int64_t kbase = (int64_t)b * kB + (int64_t)hk * D, ors = (int64_t)H * D;
  const int qb0 = causal ? key0 / BQ : 0, nqb_all = (Tn + BQ - 1) / BQ;
  // A window: the block's last key is seen by queries up to key0 + BK − 1 + window − 1, none later.
  const int nqb = window > 0 ? min(nqb_all, (key0 + BK + window - 2) / BQ + 1) : nqb_all;

  const int nq = nqb - qb0, steps = G * nq;  // (query head, query tile) pairs, head-major
  auto load_q = [&](int t, int buf) {
    const int h = hk * G + t / nq, qb = qb0 + t % nq;
    const int64_t base = (int64_t)b * sB + (int64_t)h * D, obase = (int64_t)b * Tn * H * D + (int64_t)h * D;
    const float* lrow = lse + ((int64_t)b * H + h) * Tn;
    const float* drow = Dd + ((int64_t)b * H + h) * Tn;
    load_tile<BQ, D, C::THREADS>(sQ + buf * BQ * LDS, q + base, sT, qb * BQ, Tn);
    load_tile<BQ, D, C::THREADS>(sO + buf * BQ * LDS, dout + obase, ors, qb * BQ, Tn);
    for (int c = threadIdx.x; c < 2 * BQ; c += C::THREADS) {
      const int r = qb * BQ + (c % BQ);
      const bool ok = r < Tn;
      if (c < BQ) cp_async4(sL + buf * BQ + c, lrow + (ok ? r : 0), ok);
      else cp_async4(sD + buf * BQ + (c - BQ), drow + (ok ? r : 0), ok);
    }
  };
  load_tile<BK, D, C::THREADS>(sK, k + kbase, kT, key0, Tn);
  load_tile<BK, D, C::THREADS>(sV, v + kbase, kT, key0, Tn);
  if (steps > 0) load_q(0, 0);

  float ak[DT][4], av[DT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) ak[n][e] = av[n][e] = 0.f;
  const uint32_t ka = smem_addr(sK + a_off<LDS>(lane, warp * 16, 0)), va = smem_addr(sV + a_off<LDS>(lane, warp * 16, 0));

  for (int t = 0; t < steps; ++t) {
    const int buf = t & 1, qb = qb0 + t % nq;
    cp_async_wait_all();
    __syncthreads();
    if (t + 1 < steps) load_q(t + 1, buf ^ 1);
    const int q0 = qb * BQ;
    if (wkey >= Tn || (causal && wkey > q0 + BQ - 1)) continue;
    if (window > 0 && q0 >= wkey + 15 + window) continue;  // past the window of all 16 keys
    const uint32_t qt = smem_addr(sQ + buf * BQ * LDS), ot = smem_addr(sO + buf * BQ * LDS);
    const float* Lb = sL + buf * BQ;
    const float* Db = sD + buf * BQ;

    // Sᵀ = K Qᵀ (rows: this warp's keys; columns: the tile's queries), then Pᵀ = exp(S - lse).
    float p[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) p[n][0] = p[n][1] = p[n][2] = p[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      ldsm4(a, ka + kk * 32);
#pragma unroll
      for (int np = 0; np < BQ / 16; ++np) {
        uint32_t bb[4];
        ldsm4(bb, qt + 2 * b_off<LDS>(lane, np * 16, kk * 16));
        mma(p[2 * np], a, bb[0], bb[1]);
        mma(p[2 * np + 1], a, bb[2], bb[3]);
      }
    }
    const bool masked = q0 + BQ > Tn || (causal && wkey + 15 > q0) || (window > 0 && q0 + BQ - 1 >= wkey + window);
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = n * 8 + tc * 2 + (e & 1);
        float x = ex2(p[n][e] * sl2 - Lb[qi] * LOG2E);
        if (masked) {
          const int key = wkey + g + (e >> 1) * 8;
          if (q0 + qi >= Tn || (causal && key > q0 + qi) || key < first_key(q0 + qi, window)) x = 0.f;
        }
        p[n][e] = x;
      }

    // dV += Pᵀ dO.
#pragma unroll
    for (int kc = 0; kc < BQ / 16; ++kc) {
      uint32_t a[4];
      acc_to_a(a, p[2 * kc], p[2 * kc + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bb[4];
        ldsm4_t(bb, ot + 2 * bt_off<LDS>(lane, kc * 16, dp * 16));
        mma(av[2 * dp], a, bb[0], bb[1]);
        mma(av[2 * dp + 1], a, bb[2], bb[3]);
      }
    }

    // dPᵀ = V dOᵀ, then dSᵀ = Pᵀ ∘ (dPᵀ - rowsum(dO∘O)) in place.
    float ds[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) ds[n][0] = ds[n][1] = ds[n][2] = ds[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      ldsm4(a, va + kk * 32);
#pragma unroll
      for (int np = 0; np < BQ / 16; ++np) {
        uint32_t bb[4];
        ldsm4(bb, ot + 2 * b_off<LDS>(lane, np * 16, kk * 16));
        mma(ds[2 * np], a, bb[0], bb[1]);
        mma(ds[2 * np + 1], a, bb[2], bb[3]);
      }
    }
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - Db[n * 8 + tc * 2 + (e & 1)]);

    // dK += dSᵀ Q (scaled once at the end).
#pragma unroll
    for (int kc = 0; kc < BQ / 16; ++kc) {
      uint32_t a[4];
      acc_to_a(a, ds[2 * kc], ds[2 * kc + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bb[4];
        ldsm4_t(bb, qt + 2 * bt_off<LDS>(lane, kc * 16, dp * 16));
        mma(ak[2 * dp], a, bb[0], bb[1]);
        mma(ak[2 * dp + 1], a, bb[2], bb[3]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int key = wkey + g + i * 8;
    if (key >= Tn) continue;
    const int64_t off = (((int64_t)b * Tn + key) * Hk + hk) * D + tc * 2;
    __nv_bfloat162* krow = reinterpret_cast<__nv_bfloat162*>(dk + off);
    __nv_bfloat162* vrow = reinterpret_cast<__nv_bfloat162*>(dv + off);
#pragma unroll
    for (int n = 0; n < DT; ++n) {
      krow[n * 4] = __floats2bfloat162_rn(ak[n][2 * i] * scale, ak[n][2 * i + 1] * scale);
      vrow[n * 4] = __floats2bfloat162_rn(av[n][2 * i], av[n][2 * i + 1]);
    }
  }
}

// Backward, query side: a block owns BQ = 64 query rows (16 per warp) and streams key tiles (BK = 64),
// recomputing P and dP to accumulate dQ = scale · dS K.
template <int D>
__global__ void __launch_bounds__(Bwd<D>::THREADS, 2)
    dq_mma(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, int64_t sB, int64_t sT, int64_t kB,
           int64_t kT, const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ Dd,
           bf16* __restrict__ dq, int Tn, int H, int G, float sl2, float scale, bool causal, int window) {
  using C = Bwd<D>;
  constexpr int BK = C::BK, BQ = C::BQ, LDS = C::LDS, NT = BK / 8, DT = D / 8;
  extern __shared__ uint4 smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sO = sQ + BQ * LDS;
  bf16* sK = sO + BQ * LDS;      // two buffers of BK rows
  bf16* sV = sK + 2 * BK * LDS;  // two buffers of BK rows
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;  // causal: the longest rows go first
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tc = lane & 3;
  const int wrow = q0 + warp * 16;
  const int64_t base = (int64_t)b * sB + (int64_t)h * D, kbase = (int64_t)b * kB + (int64_t)(h / G) * D;
  const int64_t obase = (int64_t)b * Tn * H * D + (int64_t)h * D, ors = (int64_t)H * D;
  const int nkb_all = (Tn + BK - 1) / BK;
  const int nkb = causal ? min(nkb_all, (q0 + BQ - 1) / BK + 1) : nkb_all;
  const int kb0 = first_key(q0, window) / BK;

  load_tile<BQ, D, C::THREADS>(sQ, q + base, sT, q0, Tn);
  load_tile<BQ, D, C::THREADS>(sO, dout + obase, ors, q0, Tn);
  load_tile<BK, D, C::THREADS>(sK, k + kbase, kT, kb0 * BK, Tn);
  load_tile<BK, D, C::THREADS>(sV, v + kbase, kT, kb0 * BK, Tn);

  float L2[2], Dr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = wrow + g + i * 8;
    L2[i] = row < Tn ? lse[(int64_t)bh * Tn + row] * LOG2E : 0.f;
    Dr[i] = row < Tn ? Dd[(int64_t)bh * Tn + row] : 0.f;
  }
  float acc[DT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  const uint32_t qa = smem_addr(sQ + a_off<LDS>(lane, warp * 16, 0)), oa = smem_addr(sO + a_off<LDS>(lane, warp * 16, 0));

  for (int kb = kb0; kb < nkb; ++kb) {
    cp_async_wait_all();
    __syncthreads();
    const int cur = (kb - kb0) & 1;
    if (kb + 1 < nkb) {
      const int nb = cur ^ 1;
      load_tile<BK, D, C::THREADS>(sK + nb * BK * LDS, k + kbase, kT, (kb + 1) * BK, Tn);
      load_tile<BK, D, C::THREADS>(sV + nb * BK * LDS, v + kbase, kT, (kb + 1) * BK, Tn);
    }
    const int key0 = kb * BK;
    if (wrow >= Tn || (causal && key0 > wrow + 15) || key0 + BK <= first_key(wrow, window)) continue;
    const uint32_t kt = smem_addr(sK + cur * BK * LDS), vt = smem_addr(sV + cur * BK * LDS);

    float p[NT][4], ds[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) p[n][e] = ds[n][e] = 0.f;
    // S = Q Kᵀ and dP = dO Vᵀ share the loop over head dimensions.
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4], a2[4];
      ldsm4(a, qa + kk * 32);
      ldsm4(a2, oa + kk * 32);
#pragma unroll
      for (int np = 0; np < BK / 16; ++np) {
        uint32_t bb[4];
        ldsm4(bb, kt + 2 * b_off<LDS>(lane, np * 16, kk * 16));
        mma(p[2 * np], a, bb[0], bb[1]);
        mma(p[2 * np + 1], a, bb[2], bb[3]);
        ldsm4(bb, vt + 2 * b_off<LDS>(lane, np * 16, kk * 16));
        mma(ds[2 * np], a2, bb[0], bb[1]);
        mma(ds[2 * np + 1], a2, bb[2], bb[3]);
      }
    }
    const bool masked = key0 + BK > Tn || (causal && key0 + BK - 1 > wrow) || key0 < first_key(wrow + 15, window);
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = ex2(p[n][e] * sl2 - L2[e >> 1]);
        if (masked) {
          const int key = key0 + n * 8 + tc * 2 + (e & 1), row = wrow + g + (e >> 1) * 8;
          if (key >= Tn || (causal && key > row) || key < first_key(row, window)) x = 0.f;
        }
        ds[n][e] = x * (ds[n][e] - Dr[e >> 1]);
      }

    // dQ += dS K.
#pragma unroll
    for (int kc = 0; kc < BK / 16; ++kc) {
      uint32_t a[4];
      acc_to_a(a, ds[2 * kc], ds[2 * kc + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bb[4];
        ldsm4_t(bb, kt + 2 * bt_off<LDS>(lane, kc * 16, dp * 16));
        mma(acc[2 * dp], a, bb[0], bb[1]);
        mma(acc[2 * dp + 1], a, bb[2], bb[3]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = wrow + g + i * 8;
    if (row >= Tn) continue;
    __nv_bfloat162* qrow = reinterpret_cast<__nv_bfloat162*>(dq + obase + (int64_t)row * ors + tc * 2);
#pragma unroll
    for (int n = 0; n < DT; ++n) qrow[n * 4] = __floats2bfloat162_rn(acc[n][2 * i] * scale, acc[n][2 * i + 1] * scale);
  }
}

// ---------------------------------------------------------------------------------------------------

void check_args(const char* op, int B, int T, int Tk, int H, int Hkv, int Dh, bool causal, int window) {
  // A window reaches back from each query to the keys before it: it has no meaning without causal.
  if (window < 0 || (window > 0 && !causal))
    throw std::runtime_error(std::string(op) + ": a sliding window (" + std::to_string(window) + " keys) needs a causal attention and a positive size");
  if (Dh < 1 || Dh > MAX_DH)
    throw std::runtime_error(std::string(op) + ": head size " + std::to_string(Dh) + " is outside 1.." + std::to_string(MAX_DH));
  if (T < 1 || Tk < 1)
    throw std::runtime_error(std::string(op) + ": " + std::to_string(T) + " queries and " + std::to_string(Tk) + " keys: both must be at least 1");
  if (causal && Tk != T)
    throw std::runtime_error(std::string(op) + ": causal attention needs as many keys (" + std::to_string(Tk) + ") as queries (" + std::to_string(T) + ")");
  if (B < 0 || H < 0)
    throw std::runtime_error(std::string(op) + ": batch " + std::to_string(B) + " and heads " + std::to_string(H) + " must not be negative");
  if (H > 0 && (Hkv < 1 || H % Hkv != 0))
    throw std::runtime_error(std::string(op) + ": " + std::to_string(Hkv) + " key/value heads do not divide " + std::to_string(H) + " query heads");
}

bool aligned(const void* p, int bytes) { return ((uintptr_t)p & (uintptr_t)(bytes - 1)) == 0; }

/** The tensor-core kernels need 16-byte aligned rows (cp.async), bf16x2 output stores, a grid.y within
 * limits and an sm_80+ device; anything else takes the generic path. */
bool use_mma(DType t, int T, int Dh, std::initializer_list<int64_t> strides, std::initializer_list<const void*> rows16,
             std::initializer_list<const void*> out4) {
  if (t != BF16 || (Dh != 64 && Dh != 128) || T > 65535 * 64) return false;
  for (int64_t st : strides)
    if (st % 8 != 0) return false;
  for (const void* p : rows16)
    if (!aligned(p, 16)) return false;
  for (const void* p : out4)
    if (!aligned(p, 4)) return false;
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 8;
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int D>
void forward_mma(const void* q, const void* k, const void* v, int64_t sB, int64_t sT, int64_t kB, int64_t kT, void* out, float* lse,
                 int B, int T, int H, int G, float scale, bool causal, int window, cudaStream_t s) {
  using C = Fwd<D>;
  allow_smem(fwd_mma<D>, C::SMEM);
  const dim3 grid((unsigned)(B * H), (unsigned)((T + C::BR - 1) / C::BR));
  fwd_mma<D><<<grid, C::THREADS, C::SMEM, s>>>((const bf16*)q, (const bf16*)k, (const bf16*)v, sB, sT, kB, kT, (bf16*)out, lse, T, H,
                                                 G, scale * LOG2E, causal, window);
  CHECK_LAUNCH();
}

template <int D>
void backward_mma(const void* q, const void* k, const void* v, int64_t sB, int64_t sT, int64_t kB, int64_t kT, const void* dout,
                  const float* lse, const float* Dd, void* dq, void* dk, void* dv, int B, int T, int H, int G, float scale, bool causal,
                  int window, cudaStream_t s) {
  using C = Bwd<D>;
  allow_smem(dkdv_mma<D>, C::SMEM_KV);
  allow_smem(dq_mma<D>, C::SMEM_Q);
  const dim3 gk((unsigned)(B * (H / G)), (unsigned)((T + C::BK - 1) / C::BK));
  dkdv_mma<D><<<gk, C::THREADS, C::SMEM_KV, s>>>((const bf16*)q, (const bf16*)k, (const bf16*)v, sB, sT, kB, kT, (const bf16*)dout,
                                                  lse, Dd, (bf16*)dk, (bf16*)dv, T, H, G, scale * LOG2E, scale, causal, window);
  CHECK_LAUNCH();
  const dim3 gq((unsigned)(B * H), (unsigned)((T + C::BQ - 1) / C::BQ));
  dq_mma<D><<<gq, C::THREADS, C::SMEM_Q, s>>>((const bf16*)q, (const bf16*)k, (const bf16*)v, sB, sT, kB, kT, (const bf16*)dout, lse,
                                               Dd, (bf16*)dq, T, H, G, scale * LOG2E, scale, causal, window);
  CHECK_LAUNCH();
}

unsigned generic_blocks(int B, int T, int H) { return (unsigned)(((int64_t)B * H * T + GW - 1) / GW); }

}  // namespace

#define DISPATCH_ATTN(t, F) DISPATCH_FLOAT(t, E, F)

void attention_forward(DType t, const void* q, const void* k, const void* v, int64_t sB, int64_t sT, int64_t kB, int64_t kT,
                       void* out, float* lse, int B, int T, int H, int Hkv, int Dh, float scale, bool causal, int window,
                       int Tk, const void* bias, int64_t bB, int64_t bH, cudaStream_t s) {
  check_args("attention_forward", B, T, Tk, H, Hkv, Dh, causal, window);
  if (B == 0 || H == 0) return;
  const int G = H / Hkv;
  // The tensor-core kernels take self-attention without a bias; a bias or cross-attention runs generic.
  if (!bias && Tk == T && use_mma(t, T, Dh, {sB, sT, kB, kT}, {q, k, v}, {out})) {
    if (Dh == 64) forward_mma<64>(q, k, v, sB, sT, kB, kT, out, lse, B, T, H, G, scale, causal, window, s);
    else forward_mma<128>(q, k, v, sB, sT, kB, kT, out, lse, B, T, H, G, scale, causal, window, s);
    return;
  }
  const Bias b{bias, bB, bH, Tk};
  DISPATCH_ATTN(t, (fwd_generic<E><<<generic_blocks(B, T, H), GW * 32, 0, s>>>((const E*)q, (const E*)k, (const E*)v, sB, sT, kB, kT,
                                                                               (E*)out, lse, B, T, Tk, H, G, Dh, scale, causal, window,
                                                                               b)));
  CHECK_LAUNCH();
}

void attention_backward(DType t, const void* q, const void* k, const void* v, int64_t sB, int64_t sT, int64_t kB, int64_t kT,
                        const void* out, const void* dout, const float* lse, void* dq, void* dk, void* dv, int B, int T, int H,
                        int Hkv, int Dh, float scale, bool causal, int window, int Tk, const void* bias, int64_t bB, int64_t bH,
                        void* dscores, cudaStream_t s) {
  check_args("attention_backward", B, T, Tk, H, Hkv, Dh, causal, window);
  if (!bias != !dscores) throw std::runtime_error("attention_backward: a bias and its dscores output go together");
  if (B == 0 || H == 0) return;
  const int G = H / Hkv;
  const int64_t rows = (int64_t)B * T * H;
  float* Dd = nullptr;
  CUDA_CHECK(cudaMallocAsync(&Dd, rows * sizeof(float), s));
  const unsigned rblocks = (unsigned)((rows * 32 + 255) / 256);
  DISPATCH_ATTN(t, (rowdot_kernel<E><<<rblocks, 256, 0, s>>>((const E*)dout, (const E*)out, Dd, T, H, Dh, rows)));
  CHECK_LAUNCH();
  if (!bias && Tk == T && use_mma(t, T, Dh, {sB, sT, kB, kT}, {q, k, v, dout}, {dq, dk, dv})) {
    if (Dh == 64) backward_mma<64>(q, k, v, sB, sT, kB, kT, dout, lse, Dd, dq, dk, dv, B, T, H, G, scale, causal, window, s);
    else backward_mma<128>(q, k, v, sB, sT, kB, kT, dout, lse, Dd, dq, dk, dv, B, T, H, G, scale, causal, window, s);
  } else {
    const Bias b{bias, bB, bH, Tk};
    // Masked scores (outside causal or the window) get no write from the kernels: zero first.
    if (dscores) CUDA_CHECK(cudaMemsetAsync(dscores, 0, (size_t)B * H * T * Tk * (t == F32 ? 4 : 2), s));
    DISPATCH_ATTN(t, (dq_generic<E><<<generic_blocks(B, T, H), GW * 32, 0, s>>>((const E*)q, (const E*)k, (const E*)v, sB, sT, kB, kT,
                                                                               (const E*)dout, lse, Dd, (E*)dq, B, T, Tk, H, G, Dh, scale,
                                                                               causal, window, b, (E*)dscores)));
    CHECK_LAUNCH();
    DISPATCH_ATTN(t, (dkdv_generic<E><<<generic_blocks(B, Tk, Hkv), GW * 32, 0, s>>>((const E*)q, (const E*)k, (const E*)v, sB, sT, kB,
                                                                                    kT, (const E*)dout, lse, Dd, (E*)dk, (E*)dv, B, T,
                                                                                    Tk, H, G, Dh, scale, causal, window, b)));
    CHECK_LAUNCH();
  }
  CUDA_CHECK(cudaFreeAsync(Dd, s));
}

}  // namespace cleave
