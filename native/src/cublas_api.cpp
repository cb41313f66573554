#include "cublas_api.h"

#include <dlfcn.h>

#include <stdexcept>
#include <string>

namespace cleave {

namespace {
void* open_library() {
  const char* names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  std::string tried;
  for (const char* n : names) {
    if (void* h = dlopen(n, RTLD_NOW | RTLD_LOCAL)) return h;
    tried += std::string(tried.empty() ? "" : ", ") + n;
  }
  throw std::runtime_error("cuBLAS is not installed (tried " + tried + "); install the CUDA toolkit's cuBLAS");
}

template <typename F>
void bind(void* lib, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) throw std::runtime_error(std::string("cuBLAS has no symbol ") + name);
}
}  // namespace

const CublasApi& cublas() {
  static CublasApi api = [] {
    CublasApi a{};
    void* lib = open_library();
    bind(lib, a.create, "cublasCreate_v2");
    bind(lib, a.destroy, "cublasDestroy_v2");
    bind(lib, a.setStream, "cublasSetStream_v2");
    bind(lib, a.gemmStridedBatchedEx, "cublasGemmStridedBatchedEx");
    return a;
  }();
  return api;
}

}  // namespace cleave
