// cleave's CUDA addon: device memory, the kernels of kernels.cu and cuBLAS GEMMs, for the CUDA
// backend (runtime/backends/cuda). Pointers cross into JavaScript as BigInts. All work goes on one
// stream and returns at once; synchronize() waits.
#include <napi.h>

#include <cstring>
#include <cstdio>
#include <unistd.h>

#include "attention.cuh"
#include "check.h"
#include "gemm.h"
#include "kernels.cuh"
#include "nccl_api.h"
#include "kernels_extra.cuh"
#include "op_codes.h"

namespace cleave {
namespace {

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t t;
    CUDA_CHECK(cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking));
    // The pool would hand freed memory back to the driver at every synchronization (threshold 0),
    // and each step synchronizes per microbatch: keep it cached, as PyTorch's allocator does.
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    return t;
  }();
  return s;
}

/** The device this process set (a multi-GPU rank's), for the calls that name one. */
int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void* ptr(const Napi::Value& v) {
  bool lossless = false;
  return reinterpret_cast<void*>(v.As<Napi::BigInt>().Uint64Value(&lossless));
}

int64_t i64(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }
float f32(const Napi::Value& v) { return v.As<Napi::Number>().FloatValue(); }

/** Runs `fn`, turning C++ exceptions into JavaScript errors. */
template <typename F>
Napi::Value guard(const Napi::CallbackInfo& info, F fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    Napi::Error::New(info.Env(), e.what()).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
}

/** The device, or null when there is none (or no driver): the caller falls back to the CPU. */
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return env.Null();
  }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("devices", n);
  o.Set("name", p.name);
  o.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
  o.Set("memoryBytes", static_cast<double>(p.totalGlobalMem));
  o.Set("multiprocessors", p.multiProcessorCount);
  return o;
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    void* p = nullptr;
    // Stream-ordered pool: allocation inside a step costs no device synchronization.
    CUDA_CHECK(cudaMallocAsync(&p, static_cast<size_t>(i64(info[0])), stream()));
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(p));
  });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaFreeAsync(ptr(info[0]), stream()));
    return info.Env().Undefined();
  });
}

/** upload(dst, typedArray): copies host bytes to the device (waits for them to leave the host). */
Napi::Value Upload(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    auto a = info[1].As<Napi::TypedArray>();
    const uint8_t* src = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    CUDA_CHECK(cudaMemcpyAsync(ptr(info[0]), src, a.ByteLength(), cudaMemcpyHostToDevice, stream()));
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    return info.Env().Undefined();
  });
}

/** download(src, bytes): waits for the stream, returns the bytes as an ArrayBuffer. */
Napi::Value Download(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    const size_t n = static_cast<size_t>(i64(info[1]));
    auto buf = Napi::ArrayBuffer::New(info.Env(), n);
    CUDA_CHECK(cudaMemcpyAsync(buf.Data(), ptr(info[0]), n, cudaMemcpyDeviceToHost, stream()));
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    return buf;
  });
}

/** memInfo(): free and total device bytes, and the pool's high-water mark since the last reset. */
Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, current_device()));
    uint64_t high = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high));
    if (info.Length() > 0 && info[0].As<Napi::Boolean>().Value()) {
      uint64_t zero = 0;
      CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
    }
    // Captured steps allocate from the graph memory pool, which the default pool's mark misses.
    uint64_t graphHigh = 0;
    CUDA_CHECK(cudaDeviceGetGraphMemAttribute(current_device(), cudaGraphMemAttrUsedMemHigh, &graphHigh));
    if (info.Length() > 0 && info[0].As<Napi::Boolean>().Value()) {
      uint64_t zero = 0;
      CUDA_CHECK(cudaDeviceSetGraphMemAttribute(current_device(), cudaGraphMemAttrUsedMemHigh, &zero));
    }
    high += graphHigh;
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("freeBytes", static_cast<double>(free));
    o.Set("totalBytes", static_cast<double>(total));
    o.Set("peakBytes", static_cast<double>(high));
    return o;
  });
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    return info.Env().Undefined();
  });
}

// --- whole-step CUDA graphs -------------------------------------------------------------------
// A step is captured once and replayed: its kernels, GEMMs and stream-ordered allocations become
// one graph launch, so the host's per-kernel work is paid once. Its data lives in static buffers
// filled before each launch.

/**
 * graphBegin(trim = true): starts recording the stream's work, after handing cached memory back so
 * that the graph's pool can use it. A recording that allocates nothing (a launch list over the step
 * arena) passes false: no wait for the stream, which on a multi-GPU rank may be waiting for a peer.
 */
Napi::Value GraphBegin(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (info.Length() < 1 || info[0].IsUndefined() || info[0].As<Napi::Boolean>().Value()) {
      CUDA_CHECK(cudaStreamSynchronize(stream()));
      cudaMemPool_t pool;
      CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, current_device()));
      CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    }
    CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed));
    return info.Env().Undefined();
  });
}

/** graphEnd(): stops recording; returns the instantiated graph. Allocations it leaves live are freed at its next launch. */
Napi::Value GraphEnd(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    cudaGraph_t g = nullptr;
    CUDA_CHECK(cudaStreamEndCapture(stream(), &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiateWithFlags(&exec, g, cudaGraphInstantiateFlagAutoFreeOnLaunch);
    cudaGraphDestroy(g);
    CUDA_CHECK(e);
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(exec));
  });
}

/** graphAbort(): ends a capture that failed part-way, dropping what it recorded, so the stream works again. */
Napi::Value GraphAbort(const Napi::CallbackInfo& info) {
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(stream(), &g);
  if (g) cudaGraphDestroy(g);
  cudaGetLastError();
  return info.Env().Undefined();
}

Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(ptr(info[0])), stream()));
    return info.Env().Undefined();
  });
}

Napi::Value GraphDestroy(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    CUDA_CHECK(cudaGraphExecDestroy(reinterpret_cast<cudaGraphExec_t>(ptr(info[0]))));
    // The graph's memory pool keeps what it reserved until trimmed.
    CUDA_CHECK(cudaDeviceGraphMemTrim(current_device()));
    return info.Env().Undefined();
  });
}

/** allocStatic(bytes): memory outside the pools and any graph, for the buffers a captured step reads at fixed addresses. */
Napi::Value AllocStatic(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, static_cast<size_t>(i64(info[0]))));
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(p));
  });
}

Napi::Value FreeStatic(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    CUDA_CHECK(cudaFree(ptr(info[0])));
    return info.Env().Undefined();
  });
}

/**
 * A kernel family's op code, refused unless the registry defines it (op_codes.h, generated from
 * src/core/ops/native_codes.ts): an unknown code would otherwise run some other op, or none.
 */
int op_code(const Napi::Value& v, const char* family, int count) {
  const int code = v.As<Napi::Number>().Int32Value();
  if (code < 0 || code >= count) {
    throw std::runtime_error(std::string(family) + ": unknown op code " + std::to_string(code) + " (the registry's " + family + " codes are 0-" +
                             std::to_string(count - 1) + "): the addon and the TypeScript build disagree; rebuild with npm run build");
  }
  return code;
}

// unary(code, dtype, in, out, n, alpha, beta)
Napi::Value Unary(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    unary(op_code(i[0], "unary", UNARY_CODE_COUNT), DType(i[1].As<Napi::Number>().Int32Value()), ptr(i[2]), ptr(i[3]), i64(i[4]), f32(i[5]), f32(i[6]), stream());
    return i.Env().Undefined();
  });
}

// binary(code, dtype, a, b, out, dims[], aStrides[], bStrides[])
Napi::Value Binary(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    auto dims = i[5].As<Napi::Array>(), sa = i[6].As<Napi::Array>(), sb = i[7].As<Napi::Array>();
    Shape sh{};
    sh.rank = static_cast<int>(dims.Length());
    if (sh.rank > MAX_RANK) throw std::runtime_error("binary op: rank above 6 is not supported on CUDA");
    int64_t n = 1;
    for (int d = 0; d < sh.rank; ++d) {
      sh.dims[d] = i64(dims.Get(d));
      sh.a[d] = i64(sa.Get(d));
      sh.b[d] = i64(sb.Get(d));
      n *= sh.dims[d];
    }
    binary(op_code(i[0], "binary", BINARY_CODE_COUNT), DType(i[1].As<Napi::Number>().Int32Value()), ptr(i[2]), ptr(i[3]), ptr(i[4]), sh, n, stream());
    return i.Env().Undefined();
  });
}

// softmax(dtype, in, out, rows, cols, log)
Napi::Value Softmax(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    softmax(DType(i[0].As<Napi::Number>().Int32Value()), ptr(i[1]), ptr(i[2]), i64(i[3]), i64(i[4]), i[5].As<Napi::Boolean>().Value(), stream());
    return i.Env().Undefined();
  });
}

// layernorm(dtype, x, gamma|0n, beta|0n, y, rows, cols, gammaLen, betaLen, eps)
Napi::Value LayerNorm(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    layernorm(DType(i[0].As<Napi::Number>().Int32Value()), ptr(i[1]), ptr(i[2]), ptr(i[3]), ptr(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), i64(i[8]), f32(i[9]), stream());
    return i.Env().Undefined();
  });
}

Shape shape_of(const Napi::Value& dimsV, const Napi::Value& aV, const Napi::Value& bV, int64_t* n) {
  auto dims = dimsV.As<Napi::Array>();
  Shape sh{};
  sh.rank = static_cast<int>(dims.Length());
  if (sh.rank > MAX_RANK) throw std::runtime_error("rank above 6 is not supported on CUDA");
  *n = 1;
  for (int d = 0; d < sh.rank; ++d) {
    sh.dims[d] = i64(dims.Get(d));
    sh.a[d] = !aV.IsEmpty() && aV.IsArray() ? i64(aV.As<Napi::Array>().Get(d)) : 0;
    sh.b[d] = !bV.IsEmpty() && bV.IsArray() ? i64(bV.As<Napi::Array>().Get(d)) : 0;
    *n *= sh.dims[d];
  }
  return sh;
}

// stridedCopy(dtype, in, out, dims[], inStrides[], base)
Napi::Value StridedCopy(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = shape_of(i[3], i[4], i.Env().Undefined(), &n);
    strided_copy(DType(i[0].As<Napi::Number>().Int32Value()), ptr(i[1]), ptr(i[2]), sh, i64(i[5]), n, stream());
    return i.Env().Undefined();
  });
}

// gather(dtype, data, idx, out, outer, dim, nidx, inner)
Napi::Value Gather(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    gather(DType(i[0].As<Napi::Number>().Int32Value()), ptr(i[1]), (const int64_t*)ptr(i[2]), ptr(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), stream());
    return i.Env().Undefined();
  });
}

// where(dtype, cond, x, y, out, dims[], condStrides[], xStrides[], yStrides[])
Napi::Value Where(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = shape_of(i[5], i[7], i[8], &n);
    int64_t cs[MAX_RANK] = {0};
    auto c = i[6].As<Napi::Array>();
    for (int d = 0; d < sh.rank; ++d) cs[d] = i64(c.Get(d));
    where(DType(i[0].As<Napi::Number>().Int32Value()), (const uint8_t*)ptr(i[1]), ptr(i[2]), ptr(i[3]), ptr(i[4]), sh, cs, n, stream());
    return i.Env().Undefined();
  });
}

int dtype_of(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }

/** A Shape from dims and one stride list (held in `a`). */
Shape strided(const Napi::Value& dimsV, const Napi::Value& stridesV, int64_t* n) {
  return shape_of(dimsV, stridesV, Napi::Value(), n);
}

// copyRegion(dtype, in, out, dims[], inStrides[], outStrides[], inBase, outBase)
Napi::Value CopyRegion(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = strided(i[3], i[4], &n);
    int64_t os[MAX_RANK] = {0};
    auto o = i[5].As<Napi::Array>();
    for (int d = 0; d < sh.rank; ++d) os[d] = i64(o.Get(d));
    copy_region(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), sh, os, i64(i[6]), i64(i[7]), n, stream());
    return i.Env().Undefined();
  });
}

// fill(dtype, out, n, value)
Napi::Value Fill(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    fill(DType(dtype_of(i[0])), ptr(i[1]), i64(i[2]), f32(i[3]), stream());
    return i.Env().Undefined();
  });
}

// reduce(op, dtype, in, out, outDims[], outStrides[], redDims[], redStrides[])  op: a ReduceCode
Napi::Value Reduce(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t nout, nred;
    Shape outer = strided(i[4], i[5], &nout), red = strided(i[6], i[7], &nred);
    reduce(op_code(i[0], "reduce", REDUCE_CODE_COUNT), DType(dtype_of(i[1])), ptr(i[2]), ptr(i[3]), outer, red, nout, nred, stream());
    return i.Env().Undefined();
  });
}

// compare(code, dtype, a, b, out, dims[], aStrides[], bStrides[])
Napi::Value Compare(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = shape_of(i[5], i[6], i[7], &n);
    compare(op_code(i[0], "compare", COMPARE_CODE_COUNT), DType(dtype_of(i[1])), ptr(i[2]), ptr(i[3]), (uint8_t*)ptr(i[4]), sh, n, stream());
    return i.Env().Undefined();
  });
}

// scatterAdd(dtype, g, idx, accF32, outer, dim, nidx, inner)
Napi::Value ScatterAdd(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    scatter_add(DType(dtype_of(i[0])), ptr(i[1]), (const int64_t*)ptr(i[2]), (float*)ptr(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), stream());
    return i.Env().Undefined();
  });
}

// layernormGradInput(dtype, g, x, gamma, dx, rows, cols, gammaLen, eps)
Napi::Value LayerNormGradInput(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    layernorm_grad_input(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), ptr(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), f32(i[8]), stream());
    return i.Env().Undefined();
  });
}

// layernormGradParams(dtype, g, x, dgamma, dbeta, rows, cols, eps)
Napi::Value LayerNormGradParams(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    layernorm_grad_params(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), ptr(i[4]), i64(i[5]), i64(i[6]), f32(i[7]), stream());
    return i.Env().Undefined();
  });
}

// sceForward(dtype, scores, labels, lossF32, weightF32, rows, cols, ignore)
Napi::Value SceForward(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    sce_forward(DType(dtype_of(i[0])), ptr(i[1]), (const int64_t*)ptr(i[2]), (float*)ptr(i[3]), (float*)ptr(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), stream());
    return i.Env().Undefined();
  });
}

// sceBackward(dtype, scores, labels, upstreamF32, wsumF32, ds, rows, cols, ignore, mean)
Napi::Value SceBackward(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    sce_backward(DType(dtype_of(i[0])), ptr(i[1]), (const int64_t*)ptr(i[2]), (const float*)ptr(i[3]), (const float*)ptr(i[4]), ptr(i[5]), i64(i[6]), i64(i[7]), i64(i[8]), i[9].As<Napi::Boolean>().Value() ? 1 : 0, stream());
    return i.Env().Undefined();
  });
}

// sumsqMulti(tensorTable, chunkTable, nchunks, chunk, outF32): Σ g² over the table's gradients into out[0]
// (the tables as adamwMulti's).
Napi::Value SumSqMulti(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    sumsq_multi((const AdamTensor*)ptr(i[0]), (const int64_t*)ptr(i[1]), i64(i[2]), i64(i[3]), (float*)ptr(i[4]), stream());
    return i.Env().Undefined();
  });
}

// geluGrad(dtype, g, x, out, n, tanh)
Napi::Value GeluGrad(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    gelu_grad(DType(i[0].As<Napi::Number>().Int32Value()), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), i[5].As<Napi::Boolean>().Value(), stream());
    return i.Env().Undefined();
  });
}

// cast(from, to, in, out, n)
Napi::Value Cast(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    cast(DType(i[0].As<Napi::Number>().Int32Value()), DType(i[1].As<Napi::Number>().Int32Value()), ptr(i[2]), ptr(i[3]), i64(i[4]), stream());
    return i.Env().Undefined();
  });
}

// adamwMulti(tensorTable, chunkTable, nchunks, chunk, copyDtype, lr, b1, b2, eps, wd, bc1, bc2, gradScale): the tables are
// device memory: AdamTensor entries (six 8-byte words each) and (tensor, start) int64 pairs.
Napi::Value AdamWMulti(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    adamw_multi((const AdamTensor*)ptr(i[0]), (const int64_t*)ptr(i[1]), i64(i[2]), i64(i[3]), DType(dtype_of(i[4])), f32(i[5]), f32(i[6]), f32(i[7]),
                f32(i[8]), f32(i[9]), f32(i[10]), f32(i[11]), f32(i[12]), stream());
    return i.Env().Undefined();
  });
}

// attentionForward(dtype, q, k, v, sB, sT, kB, kT, out, lseF32, B, T, H, Hkv, Dh, scale, causal, window, Tk, bias, bB, bH)
Napi::Value AttentionForward(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    attention_forward(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), ptr(i[8]),
                      (float*)ptr(i[9]), (int)i64(i[10]), (int)i64(i[11]), (int)i64(i[12]), (int)i64(i[13]), (int)i64(i[14]), f32(i[15]),
                      i[16].As<Napi::Boolean>().Value(), (int)i64(i[17]), (int)i64(i[18]), ptr(i[19]), i64(i[20]), i64(i[21]), stream());
    return i.Env().Undefined();
  });
}

// attentionBackward(dtype, q, k, v, sB, sT, kB, kT, out, dout, lseF32, dq, dk, dv, B, T, H, Hkv, Dh, scale, causal, window,
//                   Tk, bias, bB, bH, dscores)
Napi::Value AttentionBackward(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    attention_backward(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), ptr(i[8]),
                       ptr(i[9]), (const float*)ptr(i[10]), ptr(i[11]), ptr(i[12]), ptr(i[13]), (int)i64(i[14]), (int)i64(i[15]),
                       (int)i64(i[16]), (int)i64(i[17]), (int)i64(i[18]), f32(i[19]), i[20].As<Napi::Boolean>().Value(), (int)i64(i[21]),
                       (int)i64(i[22]), ptr(i[23]), i64(i[24]), i64(i[25]), ptr(i[26]), stream());
    return i.Env().Undefined();
  });
}

/**
 * gemm(dtype, transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch
 *      [, cDtype[, epilogue, bias, aux, auxLd]]) → whether it ran (gemm.h: false only for an epilogue
 * cuBLASLt cannot fuse here). Column-major, as cuBLAS; float32 accumulation.
 */
Napi::Value Gemm(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    GemmCall g{};
    g.dtype = i[0].As<Napi::Number>().Int32Value();
    // C may be float32 under 16-bit A and B: a weight gradient added straight into its accumulator.
    g.cDtype = i.Length() > 18 ? i[18].As<Napi::Number>().Int32Value() : g.dtype;
    g.ta = i[1].As<Napi::Boolean>().Value();
    g.tb = i[2].As<Napi::Boolean>().Value();
    g.m = (int)i64(i[3]); g.n = (int)i64(i[4]); g.k = (int)i64(i[5]);
    g.alpha = f32(i[6]); g.beta = f32(i[13]);
    g.A = ptr(i[7]); g.lda = (int)i64(i[8]); g.sA = i64(i[9]);
    g.B = ptr(i[10]); g.ldb = (int)i64(i[11]); g.sB = i64(i[12]);
    g.C = ptr(i[14]); g.ldc = (int)i64(i[15]); g.sC = i64(i[16]);
    g.batch = (int)i64(i[17]);
    if (i.Length() > 19) {
      g.epilogue = (int)i64(i[19]);
      g.bias = ptr(i[20]);
      g.aux = ptr(i[21]);
      g.auxLd = i64(i[22]);
    }
    return Napi::Boolean::New(i.Env(), gemm(g, stream()));
  });
}

// --- kernels_extra.cu: bool logic, GatherElements, Trilu, Dropout, BatchNorm, convolution, pooling ---

/** A Window3 from its 21 numbers: in, kernel, out, stride, pad, dilation, trailing pad (three each). */
Window3 window_of(const Napi::Value& v) {
  auto a = v.As<Napi::Array>();
  if (a.Length() != 21) throw std::runtime_error("a window takes 21 numbers");
  Window3 w{};
  int64_t* fields[7] = {w.in, w.k, w.out, w.stride, w.pad, w.dil, w.padEnd};
  for (int f = 0; f < 7; ++f)
    for (int d = 0; d < 3; ++d) fields[f][d] = i64(a.Get(f * 3 + d));
  return w;
}

bool flag(const Napi::Value& v) { return v.As<Napi::Boolean>().Value(); }

// logic(code, a, b|0n, out, dims[], aStrides[], bStrides[])  code: a LogicCode
Napi::Value Logic(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = shape_of(i[4], i[5], i[6], &n);
    logic(op_code(i[0], "logic", LOGIC_CODE_COUNT), (const uint8_t*)ptr(i[1]), (const uint8_t*)ptr(i[2]), (uint8_t*)ptr(i[3]), sh, n, stream());
    return i.Env().Undefined();
  });
}

// isNaN(dtype, x, out, n)
Napi::Value IsNaN(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    is_nan(DType(dtype_of(i[0])), ptr(i[1]), (uint8_t*)ptr(i[2]), i64(i[3]), stream());
    return i.Env().Undefined();
  });
}

// gatherElements(width, data, idx, out, dims[], dataStrides[], axisStride, axisDim)
Napi::Value GatherElements(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = strided(i[4], i[5], &n);
    gather_elements(dtype_of(i[0]), ptr(i[1]), (const int64_t*)ptr(i[2]), ptr(i[3]), sh, i64(i[6]), i64(i[7]), n, stream());
    return i.Env().Undefined();
  });
}

// scatterElementsAdd(dtype, g, idx, accF32, dims[], accStrides[], axisStride, axisDim)
Napi::Value ScatterElementsAdd(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = strided(i[4], i[5], &n);
    scatter_elements_add(DType(dtype_of(i[0])), ptr(i[1]), (const int64_t*)ptr(i[2]), (float*)ptr(i[3]), sh, i64(i[6]), i64(i[7]), n, stream());
    return i.Env().Undefined();
  });
}

// gatherND(width, data, idx, idx32, out, batch, tuples, slice, batchStride, dims[], strides[])
Napi::Value GatherND(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = strided(i[9], i[10], &n);
    gather_nd(dtype_of(i[0]), ptr(i[1]), ptr(i[2]), flag(i[3]), ptr(i[4]), sh, i64(i[5]), i64(i[6]), i64(i[7]), i64(i[8]), stream());
    return i.Env().Undefined();
  });
}

// gatherNDAdd(dtype, g, idx, idx32, accF32, batch, tuples, slice, batchStride, dims[], strides[])
Napi::Value GatherNDAdd(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = strided(i[9], i[10], &n);
    gather_nd_add(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), flag(i[3]), (float*)ptr(i[4]), sh, i64(i[5]), i64(i[6]), i64(i[7]), i64(i[8]), stream());
    return i.Env().Undefined();
  });
}

// trilu(width, x, out, n, rows, cols, k, upper)
Napi::Value Trilu(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    trilu(dtype_of(i[0]), ptr(i[1]), ptr(i[2]), i64(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), flag(i[7]), stream());
    return i.Env().Undefined();
  });
}

// dropout(dtype, x, y, mask|0n, n, state, threshold, scale)
Napi::Value Dropout(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    dropout(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), (uint8_t*)ptr(i[3]), i64(i[4]), (uint32_t)i64(i[5]), (uint64_t)i64(i[6]), f32(i[7]), stream());
    return i.Env().Undefined();
  });
}

// bnStats(dtype, x, meanF32, varF32, N, C, inner)
Napi::Value BnStats(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    bn_stats(DType(dtype_of(i[0])), ptr(i[1]), (float*)ptr(i[2]), (float*)ptr(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), stream());
    return i.Env().Undefined();
  });
}

// bnForward(dtype, x, scale, bias, meanF32, varF32, y, N, C, inner, eps)
Napi::Value BnForward(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    bn_forward(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), (const float*)ptr(i[4]), (const float*)ptr(i[5]), ptr(i[6]), i64(i[7]),
               i64(i[8]), i64(i[9]), f32(i[10]), stream());
    return i.Env().Undefined();
  });
}

// bnRunning(dtype, rm, rv, meanF32, varF32, rmOut|0n, rvOut|0n, C, momentum)
Napi::Value BnRunning(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    bn_running(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), (const float*)ptr(i[3]), (const float*)ptr(i[4]), ptr(i[5]), ptr(i[6]), i64(i[7]),
               f32(i[8]), stream());
    return i.Env().Undefined();
  });
}

// bnGradSums(dtype, g, x, meanF32, varF32, sumGF32, sumGXF32, N, C, inner, eps)
Napi::Value BnGradSums(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    bn_grad_sums(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), (const float*)ptr(i[3]), (const float*)ptr(i[4]), (float*)ptr(i[5]),
                 (float*)ptr(i[6]), i64(i[7]), i64(i[8]), i64(i[9]), f32(i[10]), stream());
    return i.Env().Undefined();
  });
}

// bnGradInput(dtype, g, x, scale, meanF32, varF32, sumGF32|0n, sumGXF32|0n, dx, N, C, inner, eps, training)
Napi::Value BnGradInput(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    bn_grad_input(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), (const float*)ptr(i[4]), (const float*)ptr(i[5]),
                  (const float*)ptr(i[6]), (const float*)ptr(i[7]), ptr(i[8]), i64(i[9]), i64(i[10]), i64(i[11]), f32(i[12]), flag(i[13]), stream());
    return i.Env().Undefined();
  });
}

// im2col(width, x, col, images, C, window[21])
Napi::Value Im2Col(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    im2col(dtype_of(i[0]), ptr(i[1]), ptr(i[2]), i64(i[3]), i64(i[4]), window_of(i[5]), stream());
    return i.Env().Undefined();
  });
}

// col2im(dtype, col, dx, images, C, window[21])
Napi::Value Col2Im(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    col2im(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), i64(i[3]), i64(i[4]), window_of(i[5]), stream());
    return i.Env().Undefined();
  });
}

// maxPool(dtype, x, y, indicesI64|0n, planes, window[21])
Napi::Value MaxPool(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    max_pool(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), (int64_t*)ptr(i[3]), i64(i[4]), window_of(i[5]), stream());
    return i.Env().Undefined();
  });
}

// maxPoolGrad(dtype, g, x, dx, planes, window[21])
Napi::Value MaxPoolGrad(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    max_pool_grad(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), window_of(i[5]), stream());
    return i.Env().Undefined();
  });
}

// avgPool(dtype, x, y, planes, window[21], includePad)
Napi::Value AvgPool(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    avg_pool(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), i64(i[3]), window_of(i[4]), flag(i[5]), stream());
    return i.Env().Undefined();
  });
}

// avgPoolGrad(dtype, g, dx, planes, window[21], includePad)
Napi::Value AvgPoolGrad(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    avg_pool_grad(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), i64(i[3]), window_of(i[4]), flag(i[5]), stream());
    return i.Env().Undefined();
  });
}

// rmsnorm(dtype, x, gamma, y, rows, cols, gammaLen, eps)
Napi::Value RmsNorm(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    rmsnorm(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), i64(i[5]), i64(i[6]), f32(i[7]), stream());
    return i.Env().Undefined();
  });
}

// rmsnormGradInput(dtype, g, x, gamma, dx, rows, cols, gammaLen, eps)
Napi::Value RmsNormGradInput(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    rmsnorm_grad_input(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), ptr(i[4]), i64(i[5]), i64(i[6]), i64(i[7]), f32(i[8]), stream());
    return i.Env().Undefined();
  });
}

// rmsnormGradParams(dtype, g, x, dgamma, rows, cols, eps)
Napi::Value RmsNormGradParams(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    rmsnorm_grad_params(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), i64(i[5]), f32(i[6]), stream());
    return i.Env().Undefined();
  });
}

// gatedUnit(dtype, gate, up, y, n, act)
Napi::Value GatedUnit(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    gated_unit(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), i64(i[4]), dtype_of(i[5]), stream());
    return i.Env().Undefined();
  });
}

// gatedUnitGrad(dtype, dy, gate, up, dgate, dup, n, act)
Napi::Value GatedUnitGrad(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    gated_unit_grad(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), ptr(i[4]), ptr(i[5]), i64(i[6]), dtype_of(i[7]), stream());
    return i.Env().Undefined();
  });
}

// rotary(dtype, x, cos, sin, pos|0n, out, B, S, H, D, sB, sS, sH, rd, interleaved, cacheRows)
Napi::Value Rotary(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    rotary(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), ptr(i[3]), (const int64_t*)ptr(i[4]), ptr(i[5]), i64(i[6]), i64(i[7]), i64(i[8]), i64(i[9]),
           i64(i[10]), i64(i[11]), i64(i[12]), i64(i[13]), flag(i[14]), i64(i[15]), stream());
    return i.Env().Undefined();
  });
}

// cumsum(dtype, x, out, outer, dim, inner, exclusive, reverse)
Napi::Value CumSum(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    cumsum(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), i64(i[3]), i64(i[4]), i64(i[5]), flag(i[6]), flag(i[7]), stream());
    return i.Env().Undefined();
  });
}

// pad(dtype, x, out, outDims[], inDims[], begin[], mode, value)
Napi::Value Pad(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = shape_of(i[3], i[4], i[5], &n);
    pad(DType(dtype_of(i[0])), ptr(i[1]), ptr(i[2]), sh, dtype_of(i[6]), f32(i[7]), n, stream());
    return i.Env().Undefined();
  });
}

// padGrad(dtype, g, accF32, gDims[], inDims[], begin[], mode)
Napi::Value PadGrad(const Napi::CallbackInfo& i) {
  return guard(i, [&]() -> Napi::Value {
    int64_t n;
    Shape sh = shape_of(i[3], i[4], i[5], &n);
    pad_grad(DType(dtype_of(i[0])), ptr(i[1]), (float*)ptr(i[2]), sh, dtype_of(i[6]), n, stream());
    return i.Env().Undefined();
  });
}

// --- NCCL ------------------------------------------------------------------------------------
// Communicators are BigInts; collectives and point-to-point calls go on the addon's stream, so they
// are ordered with the kernels around them. Element codes: 0 float32, 1 bfloat16, 2 float16,
// 3 bytes, 4 int64.

ncclDataType_t nccl_type(int code) {
  switch (code) {
    case 0: return NCCL_FLOAT32;
    case 1: return NCCL_BFLOAT16;
    case 2: return NCCL_FLOAT16;
    case 3: return NCCL_UINT8;
    case 4: return NCCL_INT64;
    default: throw std::runtime_error("no NCCL type for element code " + std::to_string(code));
  }
}

ncclComm_t comm_of(const Napi::Value& v) { return reinterpret_cast<ncclComm_t>(ptr(v)); }

/** ncclUniqueId(): the 128 bytes rank 0 shares with the others. */

// --- streams and events -----------------------------------------------------------------------
// Multi-rank runs send, receive and all-reduce on streams of their own, ordered with the compute
// stream (handle 0 from JavaScript) by events, so transfers overlap compute.

cudaStream_t stream_of(const Napi::Value& v) {
  void* s = ptr(v);
  return s ? reinterpret_cast<cudaStream_t>(s) : stream();
}

/**
 * exitNow(code): ends the process at once, without exit handlers or library destructors: a rank
 * whose peer failed has NCCL kernels that will never finish, and aborting its communicators can
 * wait on them forever. The driver reclaims the GPU.
 */
Napi::Value ExitNow(const Napi::CallbackInfo& info) {
  fflush(stdout);
  fflush(stderr);
  _exit((int)i64(info[0]));
}

/** setDevice(i): the GPU this process uses (a multi-GPU rank's local rank); before any other CUDA call. */
Napi::Value SetDevice(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaSetDevice((int)i64(info[0])));
    return info.Env().Undefined();
  });
}

Napi::Value StreamCreate(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(s));
  });
}

Napi::Value StreamDestroy(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaStreamDestroy(reinterpret_cast<cudaStream_t>(ptr(info[0]))));
    return info.Env().Undefined();
  });
}

/** eventCreate([timing]): an event for ordering streams, or one that records the time (a measured trace). */
Napi::Value EventCreate(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    cudaEvent_t e;
    const bool timing = info.Length() > 0 && info[0].As<Napi::Boolean>().Value();
    CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(e));
  });
}

Napi::Value EventDestroy(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaEventDestroy(reinterpret_cast<cudaEvent_t>(ptr(info[0]))));
    return info.Env().Undefined();
  });
}

/** eventRecord(event, stream): marks the point the stream has reached (0n: the compute stream). */
Napi::Value EventRecord(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaEventRecord(reinterpret_cast<cudaEvent_t>(ptr(info[0])), stream_of(info[1])));
    return info.Env().Undefined();
  });
}

/** streamWait(stream, event): later work on the stream waits for the event (neither blocks the host). */
Napi::Value StreamWait(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    CUDA_CHECK(cudaStreamWaitEvent(stream_of(info[0]), reinterpret_cast<cudaEvent_t>(ptr(info[1])), 0));
    return info.Env().Undefined();
  });
}

/** eventElapsed(a, b): ms from timing event a to timing event b (both completed). */
Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, reinterpret_cast<cudaEvent_t>(ptr(info[0])), reinterpret_cast<cudaEvent_t>(ptr(info[1]))));
    return Napi::Number::New(info.Env(), ms);
  });
}

/** eventQuery(event): whether the work before it is done (the host polls instead of blocking). */
Napi::Value EventQuery(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    const cudaError_t e = cudaEventQuery(reinterpret_cast<cudaEvent_t>(ptr(info[0])));
    if (e == cudaErrorNotReady) {
      cudaGetLastError();
      return Napi::Boolean::New(info.Env(), false);
    }
    CUDA_CHECK(e);
    return Napi::Boolean::New(info.Env(), true);
  });
}

Napi::Value NcclUniqueId(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    ncclUniqueId id;
    nccl_check(nccl().getUniqueId(&id), "ncclGetUniqueId");
    auto out = Napi::Uint8Array::New(info.Env(), sizeof id.internal);
    std::memcpy(out.Data(), id.internal, sizeof id.internal);
    return out;
  });
}

/** ncclInit(idBytes, nranks, rank): joins the world communicator (blocks until every rank has). */
Napi::Value NcclInit(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    auto bytes = info[0].As<Napi::Uint8Array>();
    ncclUniqueId id;
    if (bytes.ByteLength() != sizeof id.internal) throw std::runtime_error("an NCCL unique id is 128 bytes, not " + std::to_string(bytes.ByteLength()));
    std::memcpy(id.internal, bytes.Data(), sizeof id.internal);
    ncclComm_t comm = nullptr;
    nccl_check(nccl().commInitRank(&comm, (int)i64(info[1]), id, (int)i64(info[2])), "ncclCommInitRank");
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(comm));
  });
}

/** ncclSplit(comm, color, key): the sub-communicator of the ranks passing `color` (−1: none; returns 0n). */
Napi::Value NcclSplit(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    ncclComm_t out = nullptr;
    const int color = (int)i64(info[1]);
    nccl_check(nccl().commSplit(comm_of(info[0]), color < 0 ? SPLIT_NOCOLOR : color, (int)i64(info[2]), &out, nullptr), "ncclCommSplit");
    return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(out));
  });
}

/** ncclAllReduce(comm, code, ptr, count[, stream[, average]]): sums (or averages) in place over the communicator. */
Napi::Value NcclAllReduce(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    void* p = ptr(info[2]);
    const cudaStream_t s = info.Length() > 4 ? stream_of(info[4]) : stream();
    const ncclRedOp_t op = info.Length() > 5 && info[5].As<Napi::Boolean>().Value() ? NCCL_AVG : NCCL_SUM;
    nccl_check(nccl().allReduce(p, p, (size_t)i64(info[3]), nccl_type((int)i64(info[1])), op, comm_of(info[0]), s), "ncclAllReduce");
    return info.Env().Undefined();
  });
}

/** ncclSend(comm, code, ptr, count, peer[, stream]) and ncclRecv(comm, code, ptr, count, peer[, stream]). */
Napi::Value NcclSend(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    const cudaStream_t s = info.Length() > 5 ? stream_of(info[5]) : stream();
    nccl_check(nccl().send(ptr(info[2]), (size_t)i64(info[3]), nccl_type((int)i64(info[1])), (int)i64(info[4]), comm_of(info[0]), s), "ncclSend");
    return info.Env().Undefined();
  });
}

Napi::Value NcclRecv(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    const cudaStream_t s = info.Length() > 5 ? stream_of(info[5]) : stream();
    nccl_check(nccl().recv(ptr(info[2]), (size_t)i64(info[3]), nccl_type((int)i64(info[1])), (int)i64(info[4]), comm_of(info[0]), s), "ncclRecv");
    return info.Env().Undefined();
  });
}

/** ncclGroup(start): brackets sends and receives that must be issued together (a pipeline exchange). */
Napi::Value NcclGroup(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (info[0].As<Napi::Boolean>().Value()) nccl_check(nccl().groupStart(), "ncclGroupStart");
    else nccl_check(nccl().groupEnd(), "ncclGroupEnd");
    return info.Env().Undefined();
  });
}

/** ncclAsyncError(comm): NCCL's reason if the communicator failed in the background, else null. */
Napi::Value NcclAsyncError(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    ncclResult_t r = 0;
    nccl_check(nccl().commGetAsyncError(comm_of(info[0]), &r), "ncclCommGetAsyncError");
    if (r == 0) return info.Env().Null();
    return Napi::String::New(info.Env(), nccl().getErrorString(r));
  });
}

/** ncclClose(comm, abort): destroys the communicator, or aborts it (a peer failed: pending work is dropped). */
Napi::Value NcclClose(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (info[1].As<Napi::Boolean>().Value()) nccl_check(nccl().commAbort(comm_of(info[0])), "ncclCommAbort");
    else nccl_check(nccl().commDestroy(comm_of(info[0])), "ncclCommDestroy");
    return info.Env().Undefined();
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("alloc", Napi::Function::New(env, Alloc));
  exports.Set("free", Napi::Function::New(env, Free));
  exports.Set("upload", Napi::Function::New(env, Upload));
  exports.Set("download", Napi::Function::New(env, Download));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("setDevice", Napi::Function::New(env, SetDevice));
  exports.Set("exitNow", Napi::Function::New(env, ExitNow));
  exports.Set("streamCreate", Napi::Function::New(env, StreamCreate));
  exports.Set("streamDestroy", Napi::Function::New(env, StreamDestroy));
  exports.Set("eventCreate", Napi::Function::New(env, EventCreate));
  exports.Set("eventDestroy", Napi::Function::New(env, EventDestroy));
  exports.Set("eventRecord", Napi::Function::New(env, EventRecord));
  exports.Set("streamWait", Napi::Function::New(env, StreamWait));
  exports.Set("eventQuery", Napi::Function::New(env, EventQuery));
  exports.Set("eventElapsed", Napi::Function::New(env, EventElapsed));
  exports.Set("graphBegin", Napi::Function::New(env, GraphBegin));
  exports.Set("graphEnd", Napi::Function::New(env, GraphEnd));
  exports.Set("graphAbort", Napi::Function::New(env, GraphAbort));
  exports.Set("graphLaunch", Napi::Function::New(env, GraphLaunch));
  exports.Set("graphDestroy", Napi::Function::New(env, GraphDestroy));
  exports.Set("allocStatic", Napi::Function::New(env, AllocStatic));
  exports.Set("freeStatic", Napi::Function::New(env, FreeStatic));
  exports.Set("memInfo", Napi::Function::New(env, MemInfo));
  exports.Set("unary", Napi::Function::New(env, Unary));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("layernorm", Napi::Function::New(env, LayerNorm));
  exports.Set("geluGrad", Napi::Function::New(env, GeluGrad));
  exports.Set("cast", Napi::Function::New(env, Cast));
  exports.Set("adamwMulti", Napi::Function::New(env, AdamWMulti));
  exports.Set("ncclUniqueId", Napi::Function::New(env, NcclUniqueId));
  exports.Set("ncclInit", Napi::Function::New(env, NcclInit));
  exports.Set("ncclSplit", Napi::Function::New(env, NcclSplit));
  exports.Set("ncclAllReduce", Napi::Function::New(env, NcclAllReduce));
  exports.Set("ncclSend", Napi::Function::New(env, NcclSend));
  exports.Set("ncclRecv", Napi::Function::New(env, NcclRecv));
  exports.Set("ncclGroup", Napi::Function::New(env, NcclGroup));
  exports.Set("ncclAsyncError", Napi::Function::New(env, NcclAsyncError));
  exports.Set("ncclClose", Napi::Function::New(env, NcclClose));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("stridedCopy", Napi::Function::New(env, StridedCopy));
  exports.Set("gather", Napi::Function::New(env, Gather));
  exports.Set("where", Napi::Function::New(env, Where));
  exports.Set("copyRegion", Napi::Function::New(env, CopyRegion));
  exports.Set("fill", Napi::Function::New(env, Fill));
  exports.Set("sumsqMulti", Napi::Function::New(env, SumSqMulti));
  exports.Set("reduce", Napi::Function::New(env, Reduce));
  exports.Set("compare", Napi::Function::New(env, Compare));
  exports.Set("scatterAdd", Napi::Function::New(env, ScatterAdd));
  exports.Set("layernormGradInput", Napi::Function::New(env, LayerNormGradInput));
  exports.Set("layernormGradParams", Napi::Function::New(env, LayerNormGradParams));
  exports.Set("sceForward", Napi::Function::New(env, SceForward));
  exports.Set("sceBackward", Napi::Function::New(env, SceBackward));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
  exports.Set("logic", Napi::Function::New(env, Logic));
  exports.Set("isNaN", Napi::Function::New(env, IsNaN));
  exports.Set("gatherElements", Napi::Function::New(env, GatherElements));
  exports.Set("scatterElementsAdd", Napi::Function::New(env, ScatterElementsAdd));
  exports.Set("trilu", Napi::Function::New(env, Trilu));
  exports.Set("dropout", Napi::Function::New(env, Dropout));
  exports.Set("bnStats", Napi::Function::New(env, BnStats));
  exports.Set("bnForward", Napi::Function::New(env, BnForward));
  exports.Set("bnRunning", Napi::Function::New(env, BnRunning));
  exports.Set("bnGradSums", Napi::Function::New(env, BnGradSums));
  exports.Set("bnGradInput", Napi::Function::New(env, BnGradInput));
  exports.Set("im2col", Napi::Function::New(env, Im2Col));
  exports.Set("col2im", Napi::Function::New(env, Col2Im));
  exports.Set("maxPool", Napi::Function::New(env, MaxPool));
  exports.Set("maxPoolGrad", Napi::Function::New(env, MaxPoolGrad));
  exports.Set("avgPool", Napi::Function::New(env, AvgPool));
  exports.Set("avgPoolGrad", Napi::Function::New(env, AvgPoolGrad));
  exports.Set("rmsnorm", Napi::Function::New(env, RmsNorm));
  exports.Set("rmsnormGradInput", Napi::Function::New(env, RmsNormGradInput));
  exports.Set("rmsnormGradParams", Napi::Function::New(env, RmsNormGradParams));
  exports.Set("rotary", Napi::Function::New(env, Rotary));
  exports.Set("cumsum", Napi::Function::New(env, CumSum));
  exports.Set("pad", Napi::Function::New(env, Pad));
  exports.Set("padGrad", Napi::Function::New(env, PadGrad));
  exports.Set("gatedUnit", Napi::Function::New(env, GatedUnit));
  exports.Set("gatedUnitGrad", Napi::Function::New(env, GatedUnitGrad));
  exports.Set("gatherND", Napi::Function::New(env, GatherND));
  exports.Set("gatherNDAdd", Napi::Function::New(env, GatherNDAdd));
  return exports;
}

}  // namespace
}  // namespace cleave

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return cleave::Init(env, exports); }
NODE_API_MODULE(cleave_cuda, InitAddon)
