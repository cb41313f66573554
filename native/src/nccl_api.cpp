#include "nccl_api.h"

#include <dlfcn.h>

#include <stdexcept>
#include <string>

namespace cleave {

namespace {
void* open_library() {
  const char* names[] = {"libnccl.so.2", "libnccl.so"};
  std::string tried;
  for (const char* n : names) {
    if (void* h = dlopen(n, RTLD_NOW | RTLD_LOCAL)) return h;
    tried += std::string(tried.empty() ? "" : ", ") + n;
  }
  throw std::runtime_error("NCCL is not installed (tried " + tried + "); multi-GPU runs need NCCL 2.x (libnccl2)");
}

template <typename F>
void bind(void* lib, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) throw std::runtime_error(std::string("NCCL has no symbol ") + name + " (NCCL 2.18 or newer is needed)");
}
}  // namespace

const NcclApi& nccl() {
  static NcclApi api = [] {
    NcclApi a{};
    void* lib = open_library();
    bind(lib, a.getUniqueId, "ncclGetUniqueId");
    bind(lib, a.commInitRank, "ncclCommInitRank");
    bind(lib, a.commSplit, "ncclCommSplit");
    bind(lib, a.allReduce, "ncclAllReduce");
    bind(lib, a.send, "ncclSend");
    bind(lib, a.recv, "ncclRecv");
    bind(lib, a.groupStart, "ncclGroupStart");
    bind(lib, a.groupEnd, "ncclGroupEnd");
    bind(lib, a.commAbort, "ncclCommAbort");
    bind(lib, a.commDestroy, "ncclCommDestroy");
    bind(lib, a.commGetAsyncError, "ncclCommGetAsyncError");
    bind(lib, a.getErrorString, "ncclGetErrorString");
    return a;
  }();
  return api;
}

void nccl_check(ncclResult_t r, const char* what) {
  if (r != 0) throw std::runtime_error(std::string(what) + " failed: " + nccl().getErrorString(r));
}

}  // namespace cleave
