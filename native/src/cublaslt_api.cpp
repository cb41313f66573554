#include "cublaslt_api.h"

#include "dl.h"

namespace cleave {

const CublasLtApi& cublaslt() {
  static CublasLtApi api = [] {
    CublasLtApi a{};
    void* lib = open_first({"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}, "cuBLASLt", "install the CUDA toolkit's cuBLAS");
    const auto bind = [&](auto& fn, const char* name) { bind_symbol(lib, fn, name, "cuBLASLt"); };
    bind(a.create, "cublasLtCreate");
    bind(a.descCreate, "cublasLtMatmulDescCreate");
    bind(a.descDestroy, "cublasLtMatmulDescDestroy");
    bind(a.descSet, "cublasLtMatmulDescSetAttribute");
    bind(a.layoutCreate, "cublasLtMatrixLayoutCreate");
    bind(a.layoutDestroy, "cublasLtMatrixLayoutDestroy");
    bind(a.layoutSet, "cublasLtMatrixLayoutSetAttribute");
    bind(a.prefCreate, "cublasLtMatmulPreferenceCreate");
    bind(a.prefDestroy, "cublasLtMatmulPreferenceDestroy");
    bind(a.prefSet, "cublasLtMatmulPreferenceSetAttribute");
    bind(a.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    bind(a.matmul, "cublasLtMatmul");
    return a;
  }();
  return api;
}

}  // namespace cleave
