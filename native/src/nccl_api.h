// The slice of NCCL (2.x) that cleave calls, declared here from NVIDIA's documented API so that the
// addon compiles where NCCL is not installed (CI); libnccl.so.2 is opened at run time.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace cleave {

using ncclComm_t = struct ncclComm*;
using ncclResult_t = int;  // ncclSuccess = 0
struct ncclUniqueId {
  char internal[128];
};
// ncclDataType_t and ncclRedOp_t values (nccl.h).
enum ncclDataType_t : int { NCCL_UINT8 = 1, NCCL_INT64 = 4, NCCL_FLOAT16 = 6, NCCL_FLOAT32 = 7, NCCL_BFLOAT16 = 9 };
enum ncclRedOp_t : int { NCCL_SUM = 0, NCCL_AVG = 4 };
constexpr int SPLIT_NOCOLOR = -1;  // nccl.h: NCCL_SPLIT_NOCOLOR

struct NcclApi {
  ncclResult_t (*getUniqueId)(ncclUniqueId*);
  ncclResult_t (*commInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*commSplit)(ncclComm_t, int, int, ncclComm_t*, void*);
  ncclResult_t (*allReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*groupStart)();
  ncclResult_t (*groupEnd)();
  ncclResult_t (*commAbort)(ncclComm_t);
  ncclResult_t (*commDestroy)(ncclComm_t);
  ncclResult_t (*commGetAsyncError)(ncclComm_t, ncclResult_t*);
  const char* (*getErrorString)(ncclResult_t);
};

/** Opens libnccl once; throws std::runtime_error saying what is missing. */
const NcclApi& nccl();

/** Throws std::runtime_error naming the call and NCCL's reason when `r` is not success. */
void nccl_check(ncclResult_t r, const char* what);

}  // namespace cleave
