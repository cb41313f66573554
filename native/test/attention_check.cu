// Checks attention_forward / attention_backward against a naive float32 reference that materialises the
// T × T scores on the GPU, then times the benchmark shape. Exit status 1 on any failure.
// Build and run: native/test/run_attention_check.sh (from the repository root).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention.cuh"
#include "check.h"

using cleave::BF16;
using cleave::DType;
using cleave::F32;

namespace {

// ---- naive reference, float32, contiguous [B, T, H, Dh] ------------------------------------------

__global__ void ref_scores(const float* q, const float* k, float* S, int B, int T, int H, int Dh, float scale, bool causal, int window = 0) {
  const int64_t n = (int64_t)B * H * T * T;
  for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < n; x += (int64_t)gridDim.x * blockDim.x) {
    const int j = (int)(x % T), i = (int)((x / T) % T), bh = (int)(x / ((int64_t)T * T)), b = bh / H, h = bh % H;
    float a = 0.f;
    for (int d = 0; d < Dh; ++d) a += q[(((int64_t)b * T + i) * H + h) * Dh + d] * k[(((int64_t)b * T + j) * H + h) * Dh + d];
    S[x] = (causal && j > i) || (window > 0 && j <= i - window) ? -INFINITY : a * scale;
  }
}

/** Scores → probabilities in place, and lse [B, H, T]. */
__global__ void ref_softmax(float* S, float* lse, int rows, int T) {
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x) {
    float* s = S + (int64_t)r * T;
    float m = -INFINITY;
    for (int j = 0; j < T; ++j) m = fmaxf(m, s[j]);
    float sum = 0.f;
    for (int j = 0; j < T; ++j) sum += expf(s[j] - m);
    const float l = m + logf(sum);
    for (int j = 0; j < T; ++j) s[j] = expf(s[j] - l);
    lse[r] = l;
  }
}

/** out[b, i, h, d] = Σ_j P[b, h, i, j] · x[b, j, h, d] (transposed: Σ_j P[b, h, j, i] · x[b, j, h, d]). */
__global__ void ref_pv(const float* P, const float* x, float* out, int B, int T, int H, int Dh, bool transposed, float mul) {
  const int64_t n = (int64_t)B * T * H * Dh;
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
    const int d = (int)(o % Dh), h = (int)((o / Dh) % H), i = (int)((o / ((int64_t)Dh * H)) % T), b = (int)(o / ((int64_t)Dh * H * T));
    const float* p = P + ((int64_t)b * H + h) * T * T;
    float a = 0.f;
    for (int j = 0; j < T; ++j)
      a += (transposed ? p[(int64_t)j * T + i] : p[(int64_t)i * T + j]) * x[(((int64_t)b * T + j) * H + h) * Dh + d];
    out[o] = a * mul;
  }
}

/** dS = P ∘ (dP − Σ_j P dP) in place of dP (one thread per row). */
__global__ void ref_ds(const float* P, float* dP, int rows, int T) {
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x) {
    const float* p = P + (int64_t)r * T;
    float* g = dP + (int64_t)r * T;
    float D = 0.f;
    for (int j = 0; j < T; ++j) D += p[j] * g[j];
    for (int j = 0; j < T; ++j) g[j] = p[j] * (g[j] - D);
  }
}

struct Ref {
  std::vector<float> out, lse, dq, dk, dv;
};

Ref reference(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, const std::vector<float>& dout,
              int B, int T, int H, int Dh, float scale, bool causal, int window) {
  const int64_t n = (int64_t)B * T * H * Dh, nn = (int64_t)B * H * T * T;
  const int rows = B * H * T;
  float *dq_, *dk_, *dv_, *ddo, *S, *dP, *lse, *out, *gq, *gk, *gv;
  for (float** p : {&dq_, &dk_, &dv_, &ddo, &out, &gq, &gk, &gv}) CUDA_CHECK(cudaMalloc(p, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&S, nn * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dP, nn * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&lse, rows * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(dq_, q.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk_, k.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv_, v.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(ddo, dout.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  const int G = 1024, TH = 256;
  ref_scores<<<G, TH>>>(dq_, dk_, S, B, T, H, Dh, scale, causal, window);
  ref_softmax<<<G, TH>>>(S, lse, rows, T);
  ref_pv<<<G, TH>>>(S, dv_, out, B, T, H, Dh, false, 1.f);
  ref_scores<<<G, TH>>>(ddo, dv_, dP, B, T, H, Dh, 1.f, false);  // dP = dO Vᵀ
  ref_ds<<<G, TH>>>(S, dP, rows, T);
  ref_pv<<<G, TH>>>(dP, dk_, gq, B, T, H, Dh, false, scale);  // dQ = scale · dS K
  ref_pv<<<G, TH>>>(dP, dq_, gk, B, T, H, Dh, true, scale);   // dK = scale · dSᵀ Q
  ref_pv<<<G, TH>>>(S, ddo, gv, B, T, H, Dh, true, 1.f);      // dV = Pᵀ dO
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  Ref r;
  r.out.resize(n);
  r.dq.resize(n);
  r.dk.resize(n);
  r.dv.resize(n);
  r.lse.resize(rows);
  CUDA_CHECK(cudaMemcpy(r.out.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(r.dq.data(), gq, n * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(r.dk.data(), gk, n * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(r.dv.data(), gv, n * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(r.lse.data(), lse, rows * sizeof(float), cudaMemcpyDeviceToHost));
  for (float* p : {dq_, dk_, dv_, ddo, out, gq, gk, gv, S, dP, lse}) CUDA_CHECK(cudaFree(p));
  return r;
}

// ---- host helpers -------------------------------------------------------------------------------

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  double uniform() {  // (0, 1)
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return ((s * 0x2545F4914F6CDD1Dull >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  }
  float normal() { return (float)(std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform())); }
};

size_t esize(DType t) { return t == F32 ? 4 : 2; }

float round_to(DType t, float x) { return t == F32 ? x : __bfloat162float(__float2bfloat16(x)); }

/** Element i of a host float array, in the device dtype, at byte offset i · esize of dst. */
void put(DType t, std::vector<uint8_t>& dst, int64_t i, float x) {
  if (t == F32) std::memcpy(dst.data() + i * 4, &x, 4);
  else {
    const __nv_bfloat16 b = __float2bfloat16(x);
    std::memcpy(dst.data() + i * 2, &b, 2);
  }
}

std::vector<float> download(DType t, const void* p, int64_t n) {
  std::vector<uint8_t> raw(n * esize(t));
  CUDA_CHECK(cudaMemcpy(raw.data(), p, raw.size(), cudaMemcpyDeviceToHost));
  std::vector<float> r(n);
  for (int64_t i = 0; i < n; ++i) {
    if (t == F32) std::memcpy(&r[i], raw.data() + i * 4, 4);
    else {
      __nv_bfloat16 b;
      std::memcpy(&b, raw.data() + i * 2, 2);
      r[i] = __bfloat162float(b);
    }
  }
  return r;
}

bool same_bytes(const void* a, const void* b, size_t bytes) {
  std::vector<uint8_t> x(bytes), y(bytes);
  CUDA_CHECK(cudaMemcpy(x.data(), a, bytes, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(y.data(), b, bytes, cudaMemcpyDeviceToHost));
  return x == y;
}

// Errors are measured against the largest reference magnitude (floored at 1e-2: for T = 1, dQ and dK are
// exactly zero and only rounding noise is left to compare).
struct Err {
  double abs = 0, rel = 0;
  bool finite = true;
};
Err compare(const std::vector<float>& got, const std::vector<float>& ref) {
  Err e;
  double mref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) e.finite = false;
    e.abs = std::fmax(e.abs, std::fabs((double)got[i] - ref[i]));
    mref = std::fmax(mref, std::fabs((double)ref[i]));
  }
  e.rel = e.abs / std::fmax(mref, 1e-2);
  return e;
}

struct Case {
  DType t;
  int B, T, H, Dh;
  bool causal, packed;
  bool shifted = false;  // q, k, v start one element past an aligned address: the generic fallback
  int window = 0;        // a causal sliding window of this many keys (0: none)
  int Hkv = 0;           // key/value heads, each read by H / Hkv query heads (0: H, plain multi-head)
};

bool run_case(const Case& c, uint64_t seed) {
  const int B = c.B, T = c.T, H = c.H, Dh = c.Dh, Hkv = c.Hkv ? c.Hkv : c.H, G = H / Hkv;
  const DType t = c.t;
  const float scale = 1.f / std::sqrt((float)Dh);
  const int64_t rowsz = (int64_t)H * Dh, n = (int64_t)B * T * rowsz, krowsz = (int64_t)Hkv * Dh, nk = (int64_t)B * T * krowsz;
  const int64_t sT = c.packed ? 3 * rowsz : rowsz, sB = (int64_t)T * sT;
  const int64_t kT = c.packed ? sT : krowsz, kB = (int64_t)T * kT;
  const size_t es = esize(t);

  Rng rng(seed);
  std::vector<float> q(n), k(nk), v(nk), dout(n);
  for (std::vector<float>* a : {&q, &k, &v, &dout})
    for (float& x : *a) x = round_to(t, rng.normal());
  // The reference sees every query head with its own copy of the key/value head it reads.
  std::vector<float> kf(n), vf(n);
  for (int64_t bt = 0; bt < (int64_t)B * T; ++bt)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < Dh; ++d) {
        kf[bt * rowsz + h * Dh + d] = k[bt * krowsz + (h / G) * Dh + d];
        vf[bt * rowsz + h * Dh + d] = v[bt * krowsz + (h / G) * Dh + d];
      }

  // q, k, v in device layout: separate contiguous buffers, or interleaved rows of one packed qkv buffer.
  const int64_t in_elems = c.packed ? B * (int64_t)T * 3 * rowsz : n;
  std::vector<uint8_t> hq(in_elems * es), hk, hv, hdo(n * es);
  if (!c.packed) {
    hk.resize(nk * es);
    hv.resize(nk * es);
  }
  for (int64_t bt = 0; bt < (int64_t)B * T; ++bt)
    for (int64_t e = 0; e < rowsz; ++e) {
      const int64_t src = bt * rowsz + e;
      if (c.packed) {  // packed cases are plain multi-head: k and v rows are as wide as q's
        put(t, hq, bt * sT + e, q[src]);
        put(t, hq, bt * sT + rowsz + e, k[src]);
        put(t, hq, bt * sT + 2 * rowsz + e, v[src]);
      } else {
        put(t, hq, src, q[src]);
        if (e < krowsz) {
          put(t, hk, bt * krowsz + e, k[bt * krowsz + e]);
          put(t, hv, bt * krowsz + e, v[bt * krowsz + e]);
        }
      }
      put(t, hdo, src, dout[src]);
    }
  const size_t shift = c.shifted ? es : 0;
  void *dq_in, *dk_in = nullptr, *dv_in = nullptr, *ddo;
  CUDA_CHECK(cudaMalloc(&dq_in, hq.size() + shift));
  CUDA_CHECK(cudaMemcpy((uint8_t*)dq_in + shift, hq.data(), hq.size(), cudaMemcpyHostToDevice));
  if (!c.packed) {
    CUDA_CHECK(cudaMalloc(&dk_in, hk.size() + shift));
    CUDA_CHECK(cudaMalloc(&dv_in, hv.size() + shift));
    CUDA_CHECK(cudaMemcpy((uint8_t*)dk_in + shift, hk.data(), hk.size(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy((uint8_t*)dv_in + shift, hv.data(), hv.size(), cudaMemcpyHostToDevice));
  }
  const void* qp = (const uint8_t*)dq_in + shift;
  const void* kp = c.packed ? (const uint8_t*)qp + rowsz * es : (const uint8_t*)dk_in + shift;
  const void* vp = c.packed ? (const uint8_t*)qp + 2 * rowsz * es : (const uint8_t*)dv_in + shift;
  CUDA_CHECK(cudaMalloc(&ddo, hdo.size()));
  CUDA_CHECK(cudaMemcpy(ddo, hdo.data(), hdo.size(), cudaMemcpyHostToDevice));

  // Outputs start as NaN (all bits set) so that anything left unwritten shows.
  void *out, *gq, *gk, *gv, *gq2, *gk2, *gv2;
  float* lse;
  for (void** p : {&out, &gq, &gk, &gv, &gq2, &gk2, &gv2}) {
    const int64_t m = (p == &gk || p == &gv || p == &gk2 || p == &gv2) ? nk : n;
    CUDA_CHECK(cudaMalloc(p, m * es));
    CUDA_CHECK(cudaMemset(*p, 0xff, m * es));
  }
  CUDA_CHECK(cudaMalloc(&lse, (size_t)B * H * T * sizeof(float)));
  CUDA_CHECK(cudaMemset(lse, 0xff, (size_t)B * H * T * sizeof(float)));

  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  cleave::attention_forward(t, qp, kp, vp, sB, sT, kB, kT, out, lse, B, T, H, Hkv, Dh, scale, c.causal, c.window, T, nullptr, 0, 0, s);
  cleave::attention_backward(t, qp, kp, vp, sB, sT, kB, kT, out, ddo, lse, gq, gk, gv, B, T, H, Hkv, Dh, scale, c.causal, c.window, T, nullptr, 0, 0, nullptr, s);
  cleave::attention_backward(t, qp, kp, vp, sB, sT, kB, kT, out, ddo, lse, gq2, gk2, gv2, B, T, H, Hkv, Dh, scale, c.causal, c.window, T, nullptr, 0, 0, nullptr, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  CUDA_CHECK(cudaStreamDestroy(s));

  Ref r = reference(q, kf, vf, dout, B, T, H, Dh, scale, c.causal, c.window);
  // dK, dV of a shared head: the sum over the query heads that read it.
  std::vector<float> rdk(nk, 0.f), rdv(nk, 0.f);
  for (int64_t bt = 0; bt < (int64_t)B * T; ++bt)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < Dh; ++d) {
        rdk[bt * krowsz + (h / G) * Dh + d] += r.dk[bt * rowsz + h * Dh + d];
        rdv[bt * krowsz + (h / G) * Dh + d] += r.dv[bt * rowsz + h * Dh + d];
      }
  r.dk = rdk;
  r.dv = rdv;
  std::vector<float> lse_h((size_t)B * H * T);
  CUDA_CHECK(cudaMemcpy(lse_h.data(), lse, lse_h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  const Err e[5] = {compare(download(t, out, n), r.out), compare(lse_h, r.lse), compare(download(t, gq, n), r.dq),
                    compare(download(t, gk, nk), r.dk), compare(download(t, gv, nk), r.dv)};
  const bool det = same_bytes(gq, gq2, n * es) && same_bytes(gk, gk2, nk * es) && same_bytes(gv, gv2, nk * es);

  const double tol = t == F32 ? 1e-4 : 2e-2;
  bool ok = det;
  for (const Err& x : e) ok = ok && x.finite && x.rel <= tol;
  const bool mma = t == BF16 && (Dh == 64 || Dh == 128) && !c.shifted;
  std::printf("%s %-4s B=%d T=%-4d H=%d/%d Dh=%-3d %-6s %-7s %-11s", ok ? "PASS" : "FAIL", t == F32 ? "f32" : "bf16", B, T, H, Hkv, Dh,
              c.window ? "window" : c.causal ? "causal" : "full", c.packed ? "packed" : c.shifted ? "shifted" : "", mma ? "tensor-core" : "generic");
  const char* names[5] = {"out", "lse", "dq", "dk", "dv"};
  for (int i = 0; i < 5; ++i)
    std::printf(" | %s %.1e/%.1e%s", names[i], e[i].abs, e[i].rel, e[i].finite ? "" : " NaN");
  std::printf("%s\n", det ? "" : " | backward NOT deterministic");

  for (void* p : {dq_in, dk_in, dv_in, ddo, out, gq, gk, gv, gq2, gk2, gv2, (void*)lse})
    if (p) CUDA_CHECK(cudaFree(p));
  return ok;
}

bool expect_throw(const char* what, int T, int Dh) {
  try {
    cleave::attention_forward(BF16, nullptr, nullptr, nullptr, 0, 0, 0, 0, nullptr, nullptr, 1, T, 1, 1, Dh, 1.f, false, 0, T, nullptr, 0, 0, 0);
  } catch (const std::runtime_error& e) {
    std::printf("PASS rejects %s: %s\n", what, e.what());
    return true;
  }
  std::printf("FAIL accepted %s\n", what);
  return false;
}

__global__ void init_random(__nv_bfloat16* x, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    x[i] = __float2bfloat16(((float)(h >> 8) * (1.f / 16777216.f)) * 3.4641016f - 1.7320508f);  // unit variance
  }
}

void bench(int B, int T, int H, int Dh, bool causal) {
  const int64_t n = (int64_t)B * T * H * Dh;
  const int64_t sT = (int64_t)H * Dh, sB = (int64_t)T * sT;
  const float scale = 1.f / std::sqrt((float)Dh);
  __nv_bfloat16 *q, *k, *v, *out, *dout, *dq, *dk, *dv;
  float* lse;
  for (__nv_bfloat16** p : {&q, &k, &v, &out, &dout, &dq, &dk, &dv}) CUDA_CHECK(cudaMalloc(p, n * sizeof(__nv_bfloat16)));
  CUDA_CHECK(cudaMalloc(&lse, (size_t)B * H * T * sizeof(float)));
  uint32_t seed = 1;
  for (__nv_bfloat16* p : {q, k, v, dout}) init_random<<<1024, 256>>>(p, n, seed++);
  CUDA_CHECK(cudaGetLastError());
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  auto fwd = [&] { cleave::attention_forward(BF16, q, k, v, sB, sT, sB, sT, out, lse, B, T, H, H, Dh, scale, causal, 0, T, nullptr, 0, 0, s); };
  auto bwd = [&] { cleave::attention_backward(BF16, q, k, v, sB, sT, sB, sT, out, dout, lse, dq, dk, dv, B, T, H, H, Dh, scale, causal, 0, T, nullptr, 0, 0, nullptr, s); };
  const int iters = 20;
  const double flops = 4.0 * B * H * (double)T * T * Dh * (causal ? 0.5 : 1.0);
  float ms_f = 0, ms_b = 0;
  for (int i = 0; i < 3; ++i) fwd();
  CUDA_CHECK(cudaEventRecord(e0, s));
  for (int i = 0; i < iters; ++i) fwd();
  CUDA_CHECK(cudaEventRecord(e1, s));
  CUDA_CHECK(cudaEventSynchronize(e1));
  CUDA_CHECK(cudaEventElapsedTime(&ms_f, e0, e1));
  for (int i = 0; i < 3; ++i) bwd();
  CUDA_CHECK(cudaEventRecord(e0, s));
  for (int i = 0; i < iters; ++i) bwd();
  CUDA_CHECK(cudaEventRecord(e1, s));
  CUDA_CHECK(cudaEventSynchronize(e1));
  CUDA_CHECK(cudaEventElapsedTime(&ms_b, e0, e1));
  ms_f /= iters;
  ms_b /= iters;
  std::printf("bench bf16 B=%d T=%d H=%d Dh=%d %-6s forward %.3f ms %.1f TFLOP/s | backward %.3f ms %.1f TFLOP/s (2.5x flops)\n", B,
              T, H, Dh, causal ? "causal" : "full", ms_f, flops / (ms_f * 1e-3) / 1e12, ms_b, 2.5 * flops / (ms_b * 1e-3) / 1e12);
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  CUDA_CHECK(cudaStreamDestroy(s));
  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)out, (void*)dout, (void*)dq, (void*)dk, (void*)dv, (void*)lse}) CUDA_CHECK(cudaFree(p));
}

}  // namespace

int main() {
  const Case cases[] = {
      // generic path, float32
      {F32, 2, 1, 2, 8, false, false},
      {F32, 2, 17, 3, 8, true, false},
      {F32, 1, 64, 2, 16, true, false},
      {F32, 2, 257, 2, 16, false, false},
      {F32, 1, 257, 2, 64, true, false},
      {F32, 1, 64, 2, 128, false, false},
      {F32, 1, 1024, 2, 64, true, false},
      {F32, 1, 100, 2, 256, true, false},
      {F32, 2, 33, 2, 40, false, true},
      // generic path, bfloat16 (unusual head sizes)
      {BF16, 2, 17, 2, 8, true, false},
      {BF16, 1, 64, 3, 16, false, false},
      {BF16, 1, 65, 2, 96, true, false},
      // tensor-core path
      {BF16, 2, 1, 2, 64, true, false},
      {BF16, 2, 1, 2, 128, false, false},
      {BF16, 2, 17, 2, 64, false, false},
      {BF16, 2, 17, 2, 128, true, false},
      {BF16, 1, 64, 2, 64, false, false},
      {BF16, 1, 64, 2, 128, true, false},
      {BF16, 1, 130, 3, 128, true, false},
      {BF16, 2, 257, 2, 64, true, false},
      {BF16, 2, 257, 2, 128, true, false},
      {BF16, 1, 257, 2, 128, false, false},
      {BF16, 1, 1024, 2, 64, false, false},
      {BF16, 1, 1024, 2, 128, true, false},
      {BF16, 1, 1024, 2, 128, false, false},
      {BF16, 2, 257, 2, 128, true, true},
      {BF16, 1, 200, 2, 64, false, true},
      {BF16, 1, 77, 2, 64, true, false, true},
      // causal sliding windows: shorter than a tile, a tile, across tiles; both paths
      {F32, 1, 257, 2, 64, true, false, false, 33},
      {BF16, 1, 65, 2, 96, true, false, false, 10},
      {BF16, 2, 257, 2, 64, true, false, false, 64},
      {BF16, 1, 300, 2, 128, true, false, false, 17},
      {BF16, 1, 1024, 2, 128, true, false, false, 200},
      {BF16, 1, 1024, 2, 64, true, true, false, 129},
      // grouped-query and multi-query attention: key/value heads shared by 2, 4 and 8 query heads
      {F32, 2, 37, 4, 16, true, false, false, 0, 2},
      {F32, 1, 65, 8, 64, false, false, false, 0, 1},
      {BF16, 1, 33, 4, 96, true, false, false, 0, 1},
      {BF16, 2, 257, 8, 64, true, false, false, 0, 2},
      {BF16, 1, 300, 8, 128, true, false, false, 0, 4},
      {BF16, 1, 1024, 4, 128, false, false, false, 0, 2},
      {BF16, 1, 1024, 8, 64, true, false, false, 100, 1},
  };
  int failed = 0;
  try {
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    std::printf("columns: max abs error / max abs error relative to the largest reference value\n");
    uint64_t seed = 1;
    for (const Case& c : cases) failed += run_case(c, seed++) ? 0 : 1;
    failed += expect_throw("head size 257", 16, 257) ? 0 : 1;
    failed += expect_throw("head size 0", 16, 0) ? 0 : 1;
    failed += expect_throw("sequence length 0", 0, 64) ? 0 : 1;
    try {
      cleave::attention_forward(BF16, nullptr, nullptr, nullptr, 0, 0, 0, 0, nullptr, nullptr, 1, 16, 6, 4, 64, 1.f, false, 0, 16, nullptr, 0, 0, 0);
      std::printf("FAIL accepted 4 key/value heads for 6 query heads\n");
      ++failed;
    } catch (const std::runtime_error& e) {
      std::printf("PASS rejects 4 key/value heads for 6 query heads: %s\n", e.what());
    }
    bench(4, 1024, 16, 128, true);
    bench(4, 1024, 16, 128, false);
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s (%d failed)\n", failed ? "FAILED" : "ALL PASSED", failed);
  return failed ? 1 : 0;
}
