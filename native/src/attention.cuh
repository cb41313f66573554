// Fused scaled-dot-product attention (flash-attention style): neither pass stores the T × T score matrix.
// bfloat16 with head size 64 or 128 runs on tensor cores (sm_80 and newer); every other case takes a
// generic float32-arithmetic path that is correct for any head size up to 256.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace cleave {

/**
 * out = softmax(scale · Q Kᵀ, causal: key j > query i masked; window > 0 (causal only): also every key
 * j ≤ i − window, so each query sees its last `window` keys) V, per batch b and head h.
 * q: element (b, t, h, d) at ptr[b·sB + t·sT + h·Dh + d]; k, v: (b, t, g, d) at ptr[b·kB + t·kT + g·Dh + d]
 * for Hkv key/value heads, each read by H / Hkv consecutive query heads (grouped-query attention; Hkv = H
 * is plain multi-head). Element strides, heads side by side in a row: q, k and v may point into one
 * packed qkv buffer. out: contiguous [B, T, H, Dh].
 * lse: float32 [B, H, T], log Σ_j exp(scale · q_i · k_j) of each row, kept for the backward pass.
 * T queries and Tk keys (k, v: Tk rows; cross-attention when they differ, never with causal). bias, where
 * not null: added to the scaled scores before the softmax, row i of (b, h) at bias[b·bB + h·bH + i·Tk]
 * (bB or bH 0: broadcast over batch or heads); a row whose scores are all −∞ gets zeros and an lse of −∞.
 * With a bias or Tk ≠ T the generic kernels run.
 * Throws std::runtime_error on Dh outside 1..256, T or Tk < 1, B or H negative, Hkv not dividing H, a window
 * that is negative or without causal, or causal with Tk ≠ T; B or H of 0 does nothing.
 */
void attention_forward(DType t, const void* q, const void* k, const void* v, int64_t sB, int64_t sT, int64_t kB, int64_t kT,
                       void* out, float* lse, int B, int T, int H, int Hkv, int Dh, float scale, bool causal, int window,
                       int Tk, const void* bias, int64_t bB, int64_t bH, cudaStream_t s);

/**
 * Gradients of attention_forward: dq (contiguous [B, T, H, Dh]) and dk, dv (contiguous [B, T, Hkv, Dh], each
 * the sum over the query heads that read it), all overwritten, from dout and out
 * (contiguous [B, T, H, Dh]) and the forward's lse. Deterministic: no atomics; float32 scratch
 * (rowsum(dout ∘ out), B·H·T floats) comes from and returns to the stream's memory pool. With a bias,
 * dscores (contiguous [B, H, T, Tk], q's type) gets the gradient of the biased scores, zero where masked;
 * the caller sums it over the axes the bias broadcasts.
 */
void attention_backward(DType t, const void* q, const void* k, const void* v, int64_t sB, int64_t sT, int64_t kB, int64_t kT,
                        const void* out, const void* dout, const float* lse, void* dq, void* dk, void* dv, int B, int T, int H,
                        int Hkv, int Dh, float scale, bool causal, int window, int Tk, const void* bias, int64_t bB, int64_t bH,
                        void* dscores, cudaStream_t s);

}  // namespace cleave
