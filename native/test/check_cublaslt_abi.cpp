// Compile-time check, on a host with cuBLAS installed, that the cuBLAS / cuBLASLt values and
// structs cleave declares itself (cublas_api.h, cublaslt_api.h) match NVIDIA's headers.
//   g++ -std=c++17 -fsyntax-only -Wno-enum-compare -I/usr/local/cuda/include -Inative/src native/test/check_cublaslt_abi.cpp
#include <cublasLt.h>
#include <cublas_v2.h>

#include "cublaslt_api.h"

static_assert(cleave::LT_DESC_TRANSA == CUBLASLT_MATMUL_DESC_TRANSA);
static_assert(cleave::LT_DESC_TRANSB == CUBLASLT_MATMUL_DESC_TRANSB);
static_assert(cleave::LT_DESC_EPILOGUE == CUBLASLT_MATMUL_DESC_EPILOGUE);
static_assert(cleave::LT_DESC_BIAS_POINTER == CUBLASLT_MATMUL_DESC_BIAS_POINTER);
static_assert(cleave::LT_DESC_EPILOGUE_AUX_POINTER == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER);
static_assert(cleave::LT_DESC_EPILOGUE_AUX_LD == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD);
static_assert(cleave::LT_LAYOUT_BATCH_COUNT == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT);
static_assert(cleave::LT_LAYOUT_STRIDED_BATCH_OFFSET == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET);
static_assert(cleave::LT_PREF_MAX_WORKSPACE_BYTES == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES);
static_assert(cleave::LT_PREF_MIN_ALIGNMENT_A_BYTES == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES);
static_assert(cleave::LT_PREF_MIN_ALIGNMENT_B_BYTES == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES);
static_assert(cleave::LT_PREF_MIN_ALIGNMENT_C_BYTES == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES);
static_assert(cleave::LT_PREF_MIN_ALIGNMENT_D_BYTES == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES);
static_assert(cleave::LT_EPILOGUE_DEFAULT == CUBLASLT_EPILOGUE_DEFAULT);
static_assert(cleave::LT_EPILOGUE_BIAS == CUBLASLT_EPILOGUE_BIAS);
static_assert(cleave::LT_EPILOGUE_GELU_BIAS == CUBLASLT_EPILOGUE_GELU_BIAS);
static_assert(cleave::LT_EPILOGUE_GELU_AUX_BIAS == CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
static_assert(cleave::LT_EPILOGUE_DGELU == CUBLASLT_EPILOGUE_DGELU);
static_assert(cleave::CUBLAS_COMPUTE_32F == ::CUBLAS_COMPUTE_32F);
static_assert(cleave::DT_R_16BF == CUDA_R_16BF && cleave::DT_R_16F == CUDA_R_16F && cleave::DT_R_32F == CUDA_R_32F);
static_assert(sizeof(cleave::cublasLtMatmulAlgo_t) == sizeof(::cublasLtMatmulAlgo_t));
static_assert(sizeof(cleave::cublasLtMatmulHeuristicResult_t) == sizeof(::cublasLtMatmulHeuristicResult_t));
static_assert(offsetof(cleave::cublasLtMatmulHeuristicResult_t, workspaceSize) == offsetof(::cublasLtMatmulHeuristicResult_t, workspaceSize));
