// Checks gated_unit / gated_unit_grad (kernels_extra.cu) against a float64 host reference on the
// stored (rounded) inputs, for each activation (0 silu, 1 gelu_tanh, 2 gelu) and each storage type
// (float32, bfloat16, float16): small and odd sizes in full, and one tensor of more than 2³¹
// elements (the 64-bit index path and many grid-stride rounds) at sampled elements; then times the
// kernels on a Llama-7B MLP activation. Exit status 1 on any failure.
// Build and run: native/test/run_gated_unit_check.sh (from the repository root).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "kernels_extra.cuh"

using cleave::DType;

namespace {

/** A value in [-range, range) from element i of stream `seed`: the same on the host and the device. */
__host__ __device__ inline float hashed(uint64_t i, uint32_t seed, float range) {
  uint32_t h = (uint32_t)i * 0x9E3779B1u ^ (uint32_t)(i >> 32) * 0x85EBCA6Bu ^ seed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return ((float)h * (1.f / 4294967296.f) * 2.f - 1.f) * range;
}

template <typename T> __host__ __device__ inline T from_float(float v);
template <> __host__ __device__ inline float from_float<float>(float v) { return v; }
template <> __host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __host__ __device__ inline __half from_float<__half>(float v) { return __float2half(v); }
template <typename T> inline double to_double(T v);
template <> inline double to_double<float>(float v) { return v; }
template <> inline double to_double<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> inline double to_double<__half>(__half v) { return __half2float(v); }

template <typename T>
__global__ void fill_kernel(T* p, int64_t n, uint32_t seed, float range) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) p[i] = from_float<T>(hashed(i, seed, range));
}

/** act(x) and act'(x) in float64, from the definitions. */
void act_ref(int act, double x, double& a, double& slope) {
  if (act == 0) {
    const double s = 1 / (1 + std::exp(-x));
    a = x * s;
    slope = s * (1 + x * (1 - s));
  } else if (act == 1) {
    const double c = std::sqrt(2 / M_PI), t = std::tanh(c * (x + 0.044715 * x * x * x));
    a = 0.5 * x * (1 + t);
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
  } else {
    const double c = 0.5 * (1 + std::erf(x / std::sqrt(2.0)));
    a = x * c;
    slope = c + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
  }
}

const char* ACT_NAME[] = {"silu", "gelu_tanh", "gelu"};
const char* TYPE_NAME[] = {"float32", "bfloat16", "float16"};

/** An output's normwise error max |out − ref| / max |ref| (as test/helpers/compare.ts), and whether every element is finite. */
struct Err {
  double diff = 0, scale = 0;
  bool elementOk = true;
  void add(double out, double ref) {
    diff = std::fmax(diff, std::fabs(out - ref));
    scale = std::fmax(scale, std::fabs(ref));
    if (!std::isfinite(out)) elementOk = false;
  }
  double rel() const { return diff / (scale > 0 ? scale : 1); }
};

template <typename T>
T read_one(const T* p, int64_t i) {
  T v;
  CUDA_CHECK(cudaMemcpy(&v, p + i, sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

/** Runs both kernels on n elements of T with activation `act`; checks every element, or `samples` of them. */
template <typename T>
bool check(DType t, int act, int64_t n, int64_t samples) {
  T *gate, *up, *dy, *y, *dgate, *dup;
  for (T** p : {&gate, &up, &dy, &y, &dgate, &dup}) CUDA_CHECK(cudaMalloc(p, (size_t)n * sizeof(T)));
  fill_kernel<T><<<4096, 256>>>(gate, n, 1, 6.f);
  fill_kernel<T><<<4096, 256>>>(up, n, 2, 2.f);
  fill_kernel<T><<<4096, 256>>>(dy, n, 3, 2.f);
  CHECK_LAUNCH();
  cleave::gated_unit(t, gate, up, y, n, act, 0);
  cleave::gated_unit_grad(t, dy, gate, up, dgate, dup, n, act, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  Err ey, eg, eu;
  auto one = [&](T g, T u, T d, T yo, T dgo, T duo) {
    double a, s;
    act_ref(act, to_double(g), a, s);
    ey.add(to_double(yo), a * to_double(u));
    eu.add(to_double(duo), to_double(d) * a);
    eg.add(to_double(dgo), to_double(d) * to_double(u) * s);
  };
  if (samples <= 0) {
    std::vector<T> h[6];
    T* src[6] = {gate, up, dy, y, dgate, dup};
    for (int k = 0; k < 6; ++k) {
      h[k].resize(n);
      CUDA_CHECK(cudaMemcpy(h[k].data(), src[k], (size_t)n * sizeof(T), cudaMemcpyDeviceToHost));
    }
    for (int64_t i = 0; i < n; ++i) one(h[0][i], h[1][i], h[2][i], h[3][i], h[4][i], h[5][i]);
  } else {
    for (int64_t k = 0; k < samples; ++k) {
      // Spread over the whole range, the last elements included (the ones past 2³¹).
      const int64_t i = k < 16 ? n - 1 - k : (int64_t)((double)(k - 16) / (double)(samples - 16) * (double)(n - 1));
      one(read_one(gate, i), read_one(up, i), read_one(dy, i), read_one(y, i), read_one(dgate, i), read_one(dup, i));
    }
  }
  for (T* p : {gate, up, dy, y, dgate, dup}) CUDA_CHECK(cudaFree(p));
  // float32: float math (expf, tanhf, erff near their tails) against float64; 16-bit: one rounding of the output.
  const double tol = t == cleave::F32 ? 2e-6 : t == cleave::BF16 ? 8e-3 : 1e-3;
  const bool ok = ey.rel() <= tol && eg.rel() <= tol && eu.rel() <= tol && ey.elementOk && eg.elementOk && eu.elementOk;
  std::printf("%s %-9s %-8s n=%-11lld y %.2e  dgate %.2e  dup %.2e%s\n", ok ? "ok  " : "FAIL", ACT_NAME[act], TYPE_NAME[t], (long long)n, ey.rel(),
              eg.rel(), eu.rel(), samples > 0 ? " (sampled)" : "");
  return ok;
}

bool check_type(DType t, int act, int64_t n, int64_t samples) {
  if (t == cleave::F32) return check<float>(t, act, n, samples);
  if (t == cleave::BF16) return check<__nv_bfloat16>(t, act, n, samples);
  return check<__half>(t, act, n, samples);
}

/** Milliseconds of one call of `f`, the median of 20 after warm-up. */
template <typename F>
float time_ms(F f) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int k = 0; k < 3; ++k) f();
  std::vector<float> ms;
  for (int k = 0; k < 20; ++k) {
    CUDA_CHECK(cudaEventRecord(a));
    f();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float x;
    CUDA_CHECK(cudaEventElapsedTime(&x, a, b));
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  bool ok = true;
  try {
    for (int act = 0; act < 3; ++act)
      for (DType t : {cleave::F32, cleave::BF16, cleave::F16})
        for (int64_t n : {1LL, 7LL, 33LL * 7 * 6, 1000003LL}) ok &= check_type(t, act, n, 0);
    // 2³¹ + 5 bfloat16 elements: 64-bit indices, each thread many grid-stride rounds.
    const int64_t big = (int64_t(1) << 31) + 5;
    for (int act = 0; act < 3; ++act) ok &= check_type(cleave::BF16, act, big, 4096);
    // An unknown activation code is refused.
    bool threw = false;
    try {
      cleave::gated_unit(cleave::F32, nullptr, nullptr, nullptr, 4, 3, 0);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    std::printf("%s activation code 3 refused\n", threw ? "ok  " : "FAIL");
    ok &= threw;
    // Timing: a Llama-7B MLP activation of 8 × 2048 tokens × 11008 in bfloat16.
    const int64_t n = 8LL * 2048 * 11008;
    __nv_bfloat16 *g, *u, *d, *y, *dg, *du;
    for (__nv_bfloat16** p : {&g, &u, &d, &y, &dg, &du}) CUDA_CHECK(cudaMalloc(p, (size_t)n * 2));
    fill_kernel<__nv_bfloat16><<<4096, 256>>>(g, n, 1, 6.f);
    fill_kernel<__nv_bfloat16><<<4096, 256>>>(u, n, 2, 2.f);
    fill_kernel<__nv_bfloat16><<<4096, 256>>>(d, n, 3, 2.f);
    for (int act = 0; act < 3; ++act) {
      const float f = time_ms([&] { cleave::gated_unit(cleave::BF16, g, u, y, n, act, 0); });
      const float b = time_ms([&] { cleave::gated_unit_grad(cleave::BF16, d, g, u, dg, du, n, act, 0); });
      std::printf("time %-9s bf16 n=%lld: forward %.3f ms (%.0f GB/s), backward %.3f ms (%.0f GB/s)\n", ACT_NAME[act], (long long)n, f, 3.0 * n * 2 / f / 1e6, b,
                  5.0 * n * 2 / b / 1e6);
    }
    for (__nv_bfloat16* p : {g, u, d, y, dg, du}) CUDA_CHECK(cudaFree(p));
  } catch (const std::exception& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  std::printf(ok ? "all gated unit checks passed\n" : "some gated unit checks FAILED\n");
  return ok ? 0 : 1;
}
