#include "gemm.h"

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "check.h"
#include "cublaslt_api.h"
#include "kernels.cuh"

namespace cleave {
namespace {

// cuBLASLt's advice for Hopper: 32 MiB lets it pick its fastest split-K and stream-K kernels.
constexpr size_t kWorkspaceBytes = 32u << 20;

int cuda_type(int code) { return code == BF16 ? DT_R_16BF : code == F16 ? DT_R_16F : DT_R_32F; }

/** The largest power of two (at most 256) dividing the address: cuBLASLt picks kernels by it. */
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return 256;
  const uintptr_t low = a & (~a + 1);
  return static_cast<uint32_t>(low > 256 ? 256 : low);
}

struct Lt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

const Lt& lt() {
  static Lt l = [] {
    Lt x;
    if (cublaslt().create(&x.handle) != 0) throw std::runtime_error("cublasLtCreate failed");
    // Allocated once, outside any step: a CUDA graph captures GEMMs that use it.
    CUDA_CHECK(cudaMalloc(&x.workspace, kWorkspaceBytes));
    return x;
  }();
  return l;
}

cublasHandle_t classic(cudaStream_t s) {
  static cublasHandle_t h = [] {
    cublasHandle_t x;
    if (cublas().create(&x) != 0) throw std::runtime_error("cublasCreate failed");
    return x;
  }();
  if (cublas().setStream(h, s) != 0) throw std::runtime_error("cublasSetStream failed");
  return h;
}

/** What a cuBLASLt plan depends on: shapes, types, transposes, epilogue and operand alignments. */
struct Key {
  int dtype, cDtype, ta, tb, m, n, k, lda, ldb, ldc, batch, epilogue, hasAux;
  long long sA, sB, sC, auxLd;
  uint32_t alignA, alignB, alignC, alignBias, alignAux, betaZero;
  bool operator==(const Key& o) const { return std::memcmp(this, &o, sizeof(Key)) == 0; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    const auto* b = reinterpret_cast<const unsigned char*>(&k);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(Key); i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
  }
};

/** A cuBLASLt descriptor set and its chosen algorithm; `ok` false when cuBLASLt had none. */
struct Plan {
  bool ok = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

void lt_check(cublasStatus_t st, const char* what) {
  if (st != 0) throw std::runtime_error(std::string(what) + " failed with status " + std::to_string(st));
}

uint32_t lt_epilogue(const GemmCall& g) {
  switch (g.epilogue) {
    case EPI_NONE: return LT_EPILOGUE_DEFAULT;
    case EPI_BIAS: return LT_EPILOGUE_BIAS;
    case EPI_GELU_BIAS: return g.aux ? LT_EPILOGUE_GELU_AUX_BIAS : LT_EPILOGUE_GELU_BIAS;
    case EPI_DGELU: return LT_EPILOGUE_DGELU;
    default: throw std::runtime_error("gemm: unknown epilogue code " + std::to_string(g.epilogue));
  }
}

/** Creates the plan's descriptors and asks for an algorithm (into `p`, which owns what is created so far). */
void fill_plan(const GemmCall& g, const Key& key, Plan& p) {
  const auto& api = cublaslt();
  lt_check(api.descCreate(&p.desc, CUBLAS_COMPUTE_32F, DT_R_32F), "cublasLtMatmulDescCreate");
  const int32_t ta = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  lt_check(api.descSet(p.desc, LT_DESC_TRANSA, &ta, sizeof ta), "cublasLtMatmulDescSetAttribute(TRANSA)");
  lt_check(api.descSet(p.desc, LT_DESC_TRANSB, &tb, sizeof tb), "cublasLtMatmulDescSetAttribute(TRANSB)");
  const uint32_t epi = lt_epilogue(g);
  lt_check(api.descSet(p.desc, LT_DESC_EPILOGUE, &epi, sizeof epi), "cublasLtMatmulDescSetAttribute(EPILOGUE)");
  // The heuristic reads the epilogue pointers' alignment from the descriptor.
  if (g.bias) lt_check(api.descSet(p.desc, LT_DESC_BIAS_POINTER, &g.bias, sizeof g.bias), "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  if (g.aux) {
    const int64_t ld = g.auxLd;
    lt_check(api.descSet(p.desc, LT_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof g.aux), "cublasLtMatmulDescSetAttribute(AUX_POINTER)");
    lt_check(api.descSet(p.desc, LT_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld), "cublasLtMatmulDescSetAttribute(AUX_LD)");
  }
  const auto layout = [&](cublasLtMatrixLayout_t* l, int type, int rows, int cols, int ld, long long stride) {
    lt_check(api.layoutCreate(l, cuda_type(type), rows, cols, ld), "cublasLtMatrixLayoutCreate");
    if (g.batch > 1) {
      const int32_t count = g.batch;
      const int64_t st = stride;
      lt_check(api.layoutSet(*l, LT_LAYOUT_BATCH_COUNT, &count, sizeof count), "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
      lt_check(api.layoutSet(*l, LT_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st), "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
    }
  };
  layout(&p.a, g.dtype, g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda, g.sA);
  layout(&p.b, g.dtype, g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb, g.sB);
  layout(&p.c, g.cDtype, g.m, g.n, g.ldc, g.sC);
  cublasLtMatmulPreference_t pref;
  lt_check(api.prefCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = kWorkspaceBytes;
  api.prefSet(pref, LT_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  api.prefSet(pref, LT_PREF_MIN_ALIGNMENT_A_BYTES, &key.alignA, sizeof key.alignA);
  api.prefSet(pref, LT_PREF_MIN_ALIGNMENT_B_BYTES, &key.alignB, sizeof key.alignB);
  api.prefSet(pref, LT_PREF_MIN_ALIGNMENT_C_BYTES, &key.alignC, sizeof key.alignC);
  api.prefSet(pref, LT_PREF_MIN_ALIGNMENT_D_BYTES, &key.alignC, sizeof key.alignC);
  cublasLtMatmulHeuristicResult_t r{};
  int found = 0;
  const cublasStatus_t st = api.heuristic(lt().handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &r, &found);
  api.prefDestroy(pref);
  p.ok = st == 0 && found > 0;
  if (p.ok) p.algo = r.algo;
}

/** A plan for this call's key; a cuBLASLt call that fails on the way leaves no descriptor behind. */
std::unique_ptr<Plan> make_plan(const GemmCall& g, const Key& key) {
  auto p = std::make_unique<Plan>();
  try {
    fill_plan(g, key, *p);
  } catch (...) {
    const auto& api = cublaslt();
    for (cublasLtMatrixLayout_t l : {p->a, p->b, p->c}) if (l) api.layoutDestroy(l);
    if (p->desc) api.descDestroy(p->desc);
    throw;
  }
  return p;
}

}  // namespace

bool gemm(const GemmCall& g, cudaStream_t s) {
  static std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans;
  Key key;
  std::memset(&key, 0, sizeof key);  // padding too: keys are compared bytewise
  key.dtype = g.dtype; key.cDtype = g.cDtype; key.ta = g.ta; key.tb = g.tb; key.m = g.m; key.n = g.n; key.k = g.k;
  key.lda = g.lda; key.ldb = g.ldb; key.ldc = g.ldc; key.batch = g.batch; key.epilogue = g.epilogue; key.hasAux = g.aux != nullptr;
  key.sA = g.batch > 1 ? g.sA : 0; key.sB = g.batch > 1 ? g.sB : 0; key.sC = g.batch > 1 ? g.sC : 0; key.auxLd = g.aux ? g.auxLd : 0;
  key.alignA = alignment(g.A); key.alignB = alignment(g.B); key.alignC = alignment(g.C);
  key.alignBias = g.bias ? alignment(g.bias) : 0; key.alignAux = g.aux ? alignment(g.aux) : 0; key.betaZero = g.beta == 0.f;
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(g, key)).first;
  const Plan& p = *it->second;
  if (p.ok) {
    const auto& api = cublaslt();
    if (g.bias) lt_check(api.descSet(p.desc, LT_DESC_BIAS_POINTER, &g.bias, sizeof g.bias), "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    if (g.aux) lt_check(api.descSet(p.desc, LT_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof g.aux), "cublasLtMatmulDescSetAttribute(AUX_POINTER)");
    lt_check(api.matmul(lt().handle, p.desc, &g.alpha, g.A, p.a, g.B, p.b, &g.beta, g.C, p.c, g.C, p.c, &p.algo, lt().workspace,
                        kWorkspaceBytes, s),
             "cublasLtMatmul");
    return true;
  }
  if (g.epilogue != EPI_NONE) return false;
  const int st = cublas().gemmStridedBatchedEx(
      classic(s), g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &g.alpha, g.A, cuda_type(g.dtype),
      g.lda, g.sA, g.B, cuda_type(g.dtype), g.ldb, g.sB, &g.beta, g.C, cuda_type(g.cDtype), g.ldc, g.sC, g.batch,
      // float32 stays float32 (no TF32) until a precision policy asks for speed over bits.
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != 0) throw std::runtime_error("cublasGemmStridedBatchedEx failed with status " + std::to_string(st));
  return true;
}

}  // namespace cleave
