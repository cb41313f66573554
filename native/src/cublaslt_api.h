// The slice of cuBLASLt that cleave calls, declared from NVIDIA's documented API (enum values as
// cublasLt.h numbers them) so that the addon compiles where cuBLAS is not installed; the library is
// opened at run time. native/test/check_cublaslt_abi.cpp checks these against the real header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "cublas_api.h"

namespace cleave {

using cublasLtHandle_t = struct cublasLtContext*;
using cublasLtMatmulDesc_t = struct LtMatmulDescOpaque*;
using cublasLtMatrixLayout_t = struct LtMatrixLayoutOpaque*;
using cublasLtMatmulPreference_t = struct LtMatmulPreferenceOpaque*;

struct cublasLtMatmulAlgo_t { uint64_t data[8]; };
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

enum LtMatmulDescAttr : int {
  LT_DESC_TRANSA = 3, LT_DESC_TRANSB = 4, LT_DESC_EPILOGUE = 7, LT_DESC_BIAS_POINTER = 8,
  LT_DESC_EPILOGUE_AUX_POINTER = 11, LT_DESC_EPILOGUE_AUX_LD = 12,
};
enum LtLayoutAttr : int { LT_LAYOUT_BATCH_COUNT = 5, LT_LAYOUT_STRIDED_BATCH_OFFSET = 6 };
enum LtPreferenceAttr : int {
  LT_PREF_MAX_WORKSPACE_BYTES = 1, LT_PREF_MIN_ALIGNMENT_A_BYTES = 5, LT_PREF_MIN_ALIGNMENT_B_BYTES = 6,
  LT_PREF_MIN_ALIGNMENT_C_BYTES = 7, LT_PREF_MIN_ALIGNMENT_D_BYTES = 8,
};
enum LtEpilogue : uint32_t {
  LT_EPILOGUE_DEFAULT = 1, LT_EPILOGUE_BIAS = 4, LT_EPILOGUE_GELU_BIAS = 36, LT_EPILOGUE_GELU_AUX_BIAS = 164,
  LT_EPILOGUE_DGELU = 192,
};

struct CublasLtApi {
  cublasStatus_t (*create)(cublasLtHandle_t*);
  cublasStatus_t (*descCreate)(cublasLtMatmulDesc_t*, cublasComputeType_t, int scaleType);
  cublasStatus_t (*descDestroy)(cublasLtMatmulDesc_t);
  cublasStatus_t (*descSet)(cublasLtMatmulDesc_t, int attr, const void*, size_t);
  cublasStatus_t (*layoutCreate)(cublasLtMatrixLayout_t*, int type, uint64_t rows, uint64_t cols, int64_t ld);
  cublasStatus_t (*layoutDestroy)(cublasLtMatrixLayout_t);
  cublasStatus_t (*layoutSet)(cublasLtMatrixLayout_t, int attr, const void*, size_t);
  cublasStatus_t (*prefCreate)(cublasLtMatmulPreference_t*);
  cublasStatus_t (*prefDestroy)(cublasLtMatmulPreference_t);
  cublasStatus_t (*prefSet)(cublasLtMatmulPreference_t, int attr, const void*, size_t);
  cublasStatus_t (*heuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                              cublasLtMatmulHeuristicResult_t*, int*);
  cublasStatus_t (*matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void* alpha, const void* A, cublasLtMatrixLayout_t,
                           const void* B, cublasLtMatrixLayout_t, const void* beta, const void* C, cublasLtMatrixLayout_t, void* D,
                           cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*, void* workspace, size_t workspaceBytes, cudaStream_t);
};

/** Opens libcublasLt (13, then 12) once; throws std::runtime_error saying what is missing. */
const CublasLtApi& cublaslt();

}  // namespace cleave
