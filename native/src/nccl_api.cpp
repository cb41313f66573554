#include "nccl_api.h"

#include <stdexcept>
#include <string>

#include "dl.h"

namespace cleave {

const NcclApi& nccl() {
  static NcclApi api = [] {
    NcclApi a{};
    void* lib = open_first({"libnccl.so.2", "libnccl.so"}, "NCCL", "multi-GPU runs need NCCL 2.x (libnccl2)");
    const auto bind = [&](auto& fn, const char* name) { bind_symbol(lib, fn, name, "NCCL", " (NCCL 2.18 or newer is needed)"); };
    bind(a.getUniqueId, "ncclGetUniqueId");
    bind(a.commInitRank, "ncclCommInitRank");
    bind(a.commSplit, "ncclCommSplit");
    bind(a.allReduce, "ncclAllReduce");
    bind(a.send, "ncclSend");
    bind(a.recv, "ncclRecv");
    bind(a.groupStart, "ncclGroupStart");
    bind(a.groupEnd, "ncclGroupEnd");
    bind(a.commAbort, "ncclCommAbort");
    bind(a.commDestroy, "ncclCommDestroy");
    bind(a.commGetAsyncError, "ncclCommGetAsyncError");
    bind(a.getErrorString, "ncclGetErrorString");
    return a;
  }();
  return api;
}

void nccl_check(ncclResult_t r, const char* what) {
  if (r != 0) throw std::runtime_error(std::string(what) + " failed: " + nccl().getErrorString(r));
}

}  // namespace cleave
