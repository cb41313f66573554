#include "cublas_api.h"

#include "dl.h"

namespace cleave {

const CublasApi& cublas() {
  static CublasApi api = [] {
    CublasApi a{};
    void* lib = open_first({"libcublas.so.13", "libcublas.so.12", "libcublas.so"}, "cuBLAS", "install the CUDA toolkit's cuBLAS");
    const auto bind = [&](auto& fn, const char* name) { bind_symbol(lib, fn, name, "cuBLAS"); };
    bind(a.create, "cublasCreate_v2");
    bind(a.destroy, "cublasDestroy_v2");
    bind(a.setStream, "cublasSetStream_v2");
    bind(a.gemmStridedBatchedEx, "cublasGemmStridedBatchedEx");
    return a;
  }();
  return api;
}

}  // namespace cleave
