// Every CUDA call is checked; a failure names the call, file and line.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace cleave {
[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
  // A failed call also leaves its error for the next cudaGetLastError: clear it, or the next
  // launch check would report this failure again.
  cudaGetLastError();
  throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(e) + " (" + file + ":" + std::to_string(line) + ")");
}
}  // namespace cleave

#define CUDA_CHECK(call)                                                   \
  do {                                                                     \
    cudaError_t e_ = (call);                                               \
    if (e_ != cudaSuccess) ::cleave::cuda_fail(e_, #call, __FILE__, __LINE__); \
  } while (0)

#define CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
