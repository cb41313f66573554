// GEMMs: cuBLASLt (with its bias / GELU epilogues), falling back to cuBLAS's strided batched GEMM
// where cuBLASLt offers no algorithm for a plain product.
#pragma once
#include <cuda_runtime.h>

namespace cleave {

/** cleave's epilogue codes (the addon's API); the cuBLASLt values stay inside gemm.cpp. */
enum GemmEpilogue : int { EPI_NONE = 0, EPI_BIAS = 1, EPI_GELU_BIAS = 2, EPI_DGELU = 3 };

/**
 * Column-major, as cuBLAS: D = epilogue(alpha · op(A) · op(B) + beta · C), C and D the same
 * buffer, batched by element strides. Types are cleave DType codes; C may be float32 under 16-bit
 * A and B. Epilogues: bias (a vector of m, added to every column), GELU-tanh after the bias (its
 * input written to aux, ld auxLd, when aux is not null), and dgelu (the product times GELU′(aux)).
 */
struct GemmCall {
  int dtype, cDtype;
  bool ta, tb;
  int m, n, k;
  float alpha, beta;
  const void* A; int lda; long long sA;
  const void* B; int ldb; long long sB;
  void* C; int ldc; long long sC;
  int batch;
  int epilogue;
  const void* bias;
  void* aux;
  long long auxLd;
};

/**
 * Enqueues the GEMM on `s`. Returns false, having enqueued nothing, only where an epilogue was asked
 * for and cuBLASLt has no algorithm for it (odd sizes or alignments): the caller then applies the
 * epilogue with its own kernels.
 */
bool gemm(const GemmCall& g, cudaStream_t s);

}  // namespace cleave
