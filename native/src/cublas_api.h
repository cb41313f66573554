// The slice of cuBLAS that cleave calls, declared here from NVIDIA's documented API so that the addon
// compiles where cuBLAS is not installed (CI); the library itself is opened at run time.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace cleave {

using cublasHandle_t = struct cublasContext*;
using cublasStatus_t = int;  // CUBLAS_STATUS_SUCCESS = 0

enum cublasOperation_t : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
// cudaDataType values (library_types.h).
enum cublasDataType_t : int { DT_R_32F = 0, DT_R_16F = 2, DT_R_16BF = 14 };
enum cublasComputeType_t : int { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };
constexpr int CUBLAS_GEMM_DEFAULT = -1;

struct CublasApi {
  cublasStatus_t (*create)(cublasHandle_t*);
  cublasStatus_t (*destroy)(cublasHandle_t);
  cublasStatus_t (*setStream)(cublasHandle_t, cudaStream_t);
  cublasStatus_t (*gemmStridedBatchedEx)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                         const void*, int, int, long long, const void*, int, int, long long, const void*,
                                         void*, int, int, long long, int, int, int);
};

/** Opens libcublas (13, then 12) once; throws std::runtime_error saying what is missing. */
const CublasApi& cublas();

}  // namespace cleave
