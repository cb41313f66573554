// Checks gather_nd / gather_nd_add (kernels_extra.cu) against a host reference: float32, bfloat16,
// int64 and bool elements (moved by width), int64 and int32 indices with negative, repeated and
// out-of-range tuples, batch_dims 0 and 1; data of more than 2³¹ elements (the 64-bit index path)
// at its last rows; then times both on an embedding-sized table. Exit status 1 on any failure.
// Build and run: native/test/run_gathernd_check.sh (from the repository root).
#include <cuda_bf16.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check.h"
#include "kernels_extra.cuh"

using cleave::DType;
using cleave::Shape;

namespace {

int failures = 0;

void expect(bool ok, const char* what, int64_t at, double got, double want) {
  if (ok) return;
  if (++failures <= 20) std::printf("FAIL %s at %lld: got %g, want %g\n", what, (long long)at, got, want);
}

uint32_t hash32(uint64_t i, uint32_t seed) {
  uint32_t h = (uint32_t)i * 0x9E3779B1u ^ (uint32_t)(i >> 32) * 0x85EBCA6Bu ^ seed;
  h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
  return h;
}

struct Walk {
  int64_t batch, tuples, slice, batchStride;
  std::vector<int64_t> dims, strides;
  Shape sh() const {
    Shape s{};
    s.rank = (int)dims.size();
    for (int a = 0; a < s.rank; ++a) { s.dims[a] = dims[a]; s.a[a] = strides[a]; }
    return s;
  }
};

Walk walk(const std::vector<int64_t>& data, const std::vector<int64_t>& ind, int b) {
  Walk w{};
  const int q = (int)ind.size(), k = (int)ind[q - 1];
  auto prod = [](const std::vector<int64_t>& v, size_t from, size_t to) { int64_t p = 1; for (size_t i = from; i < to; ++i) p *= v[i]; return p; };
  w.batch = prod(data, 0, b);
  w.tuples = prod(ind, b, q - 1);
  w.slice = prod(data, b + k, data.size());
  w.batchStride = prod(data, b, data.size());
  for (int a = 0; a < k; ++a) { w.dims.push_back(data[b + a]); w.strides.push_back(prod(data, b + a + 1, data.size())); }
  return w;
}

/** The data offset of output element i, or -1 (an index out of range). */
int64_t ref_offset(const Walk& w, const std::vector<int64_t>& idx, int64_t i) {
  const int64_t q = i % w.slice, r = i / w.slice;
  int64_t off = (r / w.tuples) * w.batchStride + q;
  for (size_t a = 0; a < w.dims.size(); ++a) {
    int64_t v = idx[r * w.dims.size() + a];
    if (v < 0) v += w.dims[a];
    if (v < 0 || v >= w.dims[a]) return -1;
    off += v * w.strides[a];
  }
  return off;
}

template <typename T>
T* upload(const std::vector<T>& h) {
  T* d;
  CUDA_CHECK(cudaMalloc(&d, h.size() * sizeof(T) + 16));
  CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> download(const T* d, int64_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

/** Tuple indices: uniform in [-dim, dim), with every seventh one out of range when `oob`. */
std::vector<int64_t> make_indices(const Walk& w, uint32_t seed, bool oob) {
  std::vector<int64_t> idx(w.batch * w.tuples * w.dims.size());
  for (size_t i = 0; i < idx.size(); ++i) {
    const int64_t d = w.dims[i % w.dims.size()];
    idx[i] = (int64_t)(hash32(i, seed) % (uint32_t)(2 * d)) - d;
    if (oob && i % 7 == 3) idx[i] = (i % 2) ? d : -d - 1;
  }
  return idx;
}

template <typename T>
void check_gather(const char* name, int width, const std::vector<int64_t>& dataShape, const std::vector<int64_t>& indShape, int b, bool idx32) {
  const Walk w = walk(dataShape, indShape, b);
  const int64_t nd = w.batch * w.batchStride, n = w.batch * w.tuples * w.slice;
  std::vector<T> data(nd);
  for (int64_t i = 0; i < nd; ++i) { uint32_t h = hash32(i, 7); std::memcpy(&data[i], &h, sizeof(T) < 4 ? sizeof(T) : 4); }
  const std::vector<int64_t> idx = make_indices(w, 11, true);
  std::vector<int32_t> idx32v(idx.begin(), idx.end());
  T* dd = upload(data);
  void* di = idx32 ? (void*)upload(idx32v) : (void*)upload(idx);
  T* dout;
  CUDA_CHECK(cudaMalloc(&dout, n * sizeof(T) + 16));
  cleave::gather_nd(width, dd, di, idx32, dout, w.sh(), w.batch, w.tuples, w.slice, w.batchStride, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = download(dout, n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = ref_offset(w, idx, i);
    T want{};
    if (off >= 0) want = data[off];
    expect(std::memcmp(&out[i], &want, sizeof(T)) == 0, name, i, 0, 0);
  }
  std::printf("gather_nd %-36s %lld elements checked\n", name, (long long)n);
  cudaFree(dd); cudaFree(di); cudaFree(dout);
}

void check_add(const char* name, DType t, const std::vector<int64_t>& dataShape, const std::vector<int64_t>& indShape, int b, bool idx32) {
  const Walk w = walk(dataShape, indShape, b);
  const int64_t nd = w.batch * w.batchStride, n = w.batch * w.tuples * w.slice;
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i) g[i] = (float)(hash32(i, 5) % 2001) / 1000.f - 1.f;
  std::vector<__nv_bfloat16> gb(n);
  for (int64_t i = 0; i < n; ++i) { gb[i] = __float2bfloat16(g[i]); g[i] = t == cleave::BF16 ? __bfloat162float(gb[i]) : g[i]; }
  // Few distinct tuples: many repeats per data element.
  const std::vector<int64_t> idx = make_indices(w, 13, true);
  std::vector<int32_t> idx32v(idx.begin(), idx.end());
  void* dg = t == cleave::BF16 ? (void*)upload(gb) : (void*)upload(g);
  void* di = idx32 ? (void*)upload(idx32v) : (void*)upload(idx);
  std::vector<double> want(nd, 0.0);
  for (int64_t i = 0; i < n; ++i) { const int64_t off = ref_offset(w, idx, i); if (off >= 0) want[off] += g[i]; }
  std::vector<float> init(nd, 0.f);
  float* acc = upload(init);
  cleave::gather_nd_add(t, dg, di, idx32, acc, w.sh(), w.batch, w.tuples, w.slice, w.batchStride, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = download(acc, nd);
  double scale = 1e-30;
  for (double v : want) scale = std::fmax(scale, std::fabs(v));
  for (int64_t i = 0; i < nd; ++i) expect(std::fabs(got[i] - want[i]) <= 1e-5 * scale, name, i, got[i], want[i]);
  std::printf("gather_nd_add %-32s %lld dy elements into %lld\n", name, (long long)n, (long long)nd);
  cudaFree(dg); cudaFree(di); cudaFree(acc);
}

}  // namespace

int main() {
  check_gather<float>("f32 slices, int64", 0, {6, 5, 7}, {4, 3, 1}, 0, false);
  check_gather<float>("f32 single elements, int32", 0, {4, 5, 3}, {2, 9, 3}, 0, true);
  check_gather<uint16_t>("bf16 rows, batch_dims 1, int32", 1, {3, 6, 4, 5}, {3, 7, 2}, 1, true);
  check_gather<uint64_t>("int64 rows, batch_dims 2", 2, {2, 3, 8, 5}, {2, 3, 4, 1}, 2, false);
  check_gather<uint8_t>("bool elements", 3, {9, 8}, {50, 2}, 0, false);
  check_add("f32 slices, repeats", cleave::F32, {6, 5, 7}, {40, 3, 1}, 0, false);
  check_add("bf16 dy, batch_dims 1, int32", cleave::BF16, {3, 6, 4, 5}, {3, 70, 2}, 1, true);
  check_add("f32 single elements, repeats", cleave::F32, {4, 5, 3}, {300, 3}, 0, false);

  {
    // Bytes of more than 2³¹ elements: the 64-bit path; the last rows are read by positive and negative indices.
    const int64_t rows = (int64_t(1) << 20) + 3, cols = 2048, n = rows * cols;
    uint8_t* data;
    CUDA_CHECK(cudaMalloc(&data, n));
    CUDA_CHECK(cudaMemset(data, 0, n));
    const int64_t pick[4] = {rows - 1, -1, rows - 3, -(rows - 5)};
    for (int j = 0; j < 4; ++j) {
      const int64_t r = pick[j] < 0 ? pick[j] + rows : pick[j];
      CUDA_CHECK(cudaMemset(data + r * cols, 17 + j, cols));
    }
    const std::vector<int64_t> idx(pick, pick + 4);
    int64_t* di = upload(idx);
    uint8_t* out;
    CUDA_CHECK(cudaMalloc(&out, 4 * cols));
    Shape sh{};
    sh.rank = 1; sh.dims[0] = rows; sh.a[0] = cols;
    cleave::gather_nd(3, data, di, false, out, sh, 1, 4, cols, n, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<uint8_t> h = download(out, 4 * cols);
    for (int64_t i = 0; i < 4 * cols; ++i) expect(h[i] == 17 + i / cols, "64-bit path", i, h[i], 17 + i / cols);
    std::printf("gather_nd 64-bit path over %lld bytes checked\n", (long long)n);
    cudaFree(data); cudaFree(di); cudaFree(out);
  }

  {
    // An embedding-sized table [32000, 4096] in bf16, 16384 rows gathered, and their gradient.
    const std::vector<int64_t> dataShape = {32000, 4096}, indShape = {16384, 1};
    const Walk w = walk(dataShape, indShape, 0);
    const int64_t nd = w.batch * w.batchStride, n = w.tuples * w.slice;
    void *data, *out, *g;
    float* acc;
    CUDA_CHECK(cudaMalloc(&data, nd * 2)); CUDA_CHECK(cudaMalloc(&out, n * 2)); CUDA_CHECK(cudaMalloc(&g, n * 2)); CUDA_CHECK(cudaMalloc(&acc, nd * 4));
    CUDA_CHECK(cudaMemset(data, 0, nd * 2)); CUDA_CHECK(cudaMemset(g, 0, n * 2)); CUDA_CHECK(cudaMemset(acc, 0, nd * 4));
    std::vector<int64_t> idx(w.tuples);
    for (int64_t i = 0; i < w.tuples; ++i) idx[i] = hash32(i, 3) % 32000;
    int64_t* di = upload(idx);
    auto time = [&](auto f) {
      for (int r = 0; r < 3; ++r) f();
      cudaEvent_t a, b;
      cudaEventCreate(&a); cudaEventCreate(&b);
      cudaEventRecord(a);
      for (int r = 0; r < 20; ++r) f();
      cudaEventRecord(b);
      CUDA_CHECK(cudaEventSynchronize(b));
      float ms;
      cudaEventElapsedTime(&ms, a, b);
      return ms / 20;
    };
    const float tf = time([&] { cleave::gather_nd(1, data, di, false, out, w.sh(), 1, w.tuples, w.slice, w.batchStride, 0); });
    const float tb = time([&] { cleave::gather_nd_add(cleave::BF16, g, di, false, acc, w.sh(), 1, w.tuples, w.slice, w.batchStride, 0); });
    std::printf("timing [32000, 4096] bf16, 16384 rows: gather_nd %.3f ms (%.0f GB/s read+write), gather_nd_add %.3f ms\n", tf,
                2.0 * n * 2 / (tf * 1e6), tb);
    cudaFree(data); cudaFree(out); cudaFree(g); cudaFree(acc); cudaFree(di);
  }

  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("all GatherND kernel checks passed\n");
  return 0;
}
