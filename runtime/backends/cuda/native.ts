import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CleaveError } from '../../../src/core/errors.js';

/** The addon's functions (native/src/addon.cpp); pointers are BigInts. */
export interface NativeCuda {
  info(): { devices: number; name: string; computeCapability: string; memoryBytes: number; multiprocessors: number } | null;
  alloc(bytes: number): bigint;
  free(ptr: bigint): void;
  upload(ptr: bigint, data: ArrayBufferView): void;
  download(ptr: bigint, bytes: number): ArrayBuffer;
  synchronize(): void;
  /** Whole-step graphs: record the stream's work, instantiate it, replay it. */
  /** Starts a capture; `trim` (default) first waits for the stream and hands the pool's cached memory back. */
  graphBegin(trim?: boolean): void;
  graphEnd(): bigint;
  graphAbort(): void;
  graphLaunch(exec: bigint): void;
  graphDestroy(exec: bigint): void;
  /** Buffers at fixed addresses outside the pools (a captured step's feeds). */
  allocStatic(bytes: number): bigint;
  freeStatic(ptr: bigint): void;
  unary(code: number, dtype: number, x: bigint, out: bigint, n: number, alpha: number, beta: number): void;
  binary(code: number, dtype: number, a: bigint, b: bigint, out: bigint, dims: number[], sa: number[], sb: number[]): void;
  where(dtype: number, c: bigint, x: bigint, y: bigint, out: bigint, dims: number[], sc: number[], sx: number[], sy: number[]): void;
  softmax(dtype: number, x: bigint, out: bigint, rows: number, cols: number, log: boolean): void;
  layernorm(dtype: number, x: bigint, g: bigint, b: bigint, y: bigint, rows: number, cols: number, gl: number, bl: number, eps: number): void;
  geluGrad(dtype: number, g: bigint, x: bigint, out: bigint, n: number, tanh: boolean): void;
  cast(from: number, to: number, x: bigint, out: bigint, n: number): void;
  /**
   * AdamW over many tensors in one launch. `tensors`: device table of [w, g, m, v, copy|0, n] int64
   * words per tensor; `chunks`: device table of (tensor, start) int64 pairs, one per block of `chunk`
   * elements; `copyDtype`: the dtype code of the copies (ignored where copy is 0).
   */
  adamwMulti(tensors: bigint, chunks: bigint, nchunks: number, chunk: number, copyDtype: number, lr: number, b1: number, b2: number, eps: number, wd: number,
    bc1: number, bc2: number, gscale: number): void;
  /** NCCL (loaded on first use; a missing library is a clear error). Element codes: 0 f32, 1 bf16, 2 f16, 3 bytes, 4 int64. */
  ncclUniqueId(): Uint8Array;
  ncclInit(id: Uint8Array, nranks: number, rank: number): bigint;
  ncclSplit(comm: bigint, color: number, key: number): bigint;
  /** Streams are 0n for the compute stream. `average` divides the sum by the communicator's size. */
  ncclAllReduce(comm: bigint, code: number, ptr: bigint, count: number, stream?: bigint, average?: boolean): void;
  ncclSend(comm: bigint, code: number, ptr: bigint, count: number, peer: number, stream?: bigint): void;
  ncclRecv(comm: bigint, code: number, ptr: bigint, count: number, peer: number, stream?: bigint): void;
  /** Ends the process at once (no exit handlers, no library teardown): a failed multi-GPU rank. */
  exitNow(code: number): never;
  /** The GPU this process uses (a rank's local rank): before any other CUDA call. */
  setDevice(device: number): void;
  /** Communication streams and the events that order them with the compute stream (handle 0n). */
  streamCreate(): bigint;
  streamDestroy(stream: bigint): void;
  /** `timing`: the event records when the stream reached it (eventElapsed), else it only orders streams. */
  eventCreate(timing?: boolean): bigint;
  /** Milliseconds from timing event a to timing event b, both completed. */
  eventElapsed(a: bigint, b: bigint): number;
  eventDestroy(event: bigint): void;
  eventRecord(event: bigint, stream: bigint): void;
  streamWait(stream: bigint, event: bigint): void;
  /** Whether the work before the event is done: the host polls rather than blocks. */
  eventQuery(event: bigint): boolean;
  ncclGroup(start: boolean): void;
  ncclAsyncError(comm: bigint): string | null;
  ncclClose(comm: bigint, abort: boolean): void;
  memInfo(resetPeak?: boolean): { freeBytes: number; totalBytes: number; peakBytes: number };
  gemm(dtype: number, ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number, A: bigint, lda: number, sA: number,
    B: bigint, ldb: number, sB: number, beta: number, C: bigint, ldc: number, sC: number, batch: number, cDtype?: number,
    epilogue?: number, bias?: bigint, aux?: bigint, auxLd?: number): boolean;
  stridedCopy(dtype: number, x: bigint, out: bigint, dims: number[], strides: number[], base: number): void;
  gather(dtype: number, data: bigint, idx: bigint, out: bigint, outer: number, dim: number, nidx: number, inner: number): void;
  copyRegion(dtype: number, x: bigint, out: bigint, dims: number[], inStrides: number[], outStrides: number[], inBase: number, outBase: number): void;
  fill(dtype: number, out: bigint, n: number, value: number): void;
  /** Σ g² over the gradients of an AdamW table (adamwMulti's tables) into out[0], in one launch. */
  sumsqMulti(tensors: bigint, chunks: bigint, nchunks: number, chunk: number, out: bigint): void;
  reduce(op: number, dtype: number, x: bigint, out: bigint, outDims: number[], outStrides: number[], redDims: number[], redStrides: number[]): void;
  compare(code: number, dtype: number, a: bigint, b: bigint, out: bigint, dims: number[], sa: number[], sb: number[]): void;
  scatterAdd(dtype: number, g: bigint, idx: bigint, acc: bigint, outer: number, dim: number, nidx: number, inner: number): void;
  layernormGradInput(dtype: number, g: bigint, x: bigint, gamma: bigint, dx: bigint, rows: number, cols: number, gl: number, eps: number): void;
  layernormGradParams(dtype: number, g: bigint, x: bigint, dg: bigint, db: bigint, rows: number, cols: number, eps: number): void;
  sceForward(dtype: number, scores: bigint, labels: bigint, loss: bigint, weight: bigint, rows: number, cols: number, ignore: number): void;
  sceBackward(dtype: number, scores: bigint, labels: bigint, up: bigint, wsum: bigint, ds: bigint, rows: number, cols: number, ignore: number, mean: boolean): void;
  /** q, k, v: element (b, t, h, d) at ptr + b·sB + t·sT + h·Dh + d; out contiguous [B, T, H, Dh]; lse float32 [B, H, T]. */
  /** q strides sB, sT; k and v strides kB, kT; Hkv key/value heads, each read by H / Hkv query heads. */
  /** Tk keys (T queries); bias 0n or [Bb, Hb, T, Tk] contiguous, bB/bH its batch and head strides (0: broadcast). */
  attentionForward(dtype: number, q: bigint, k: bigint, v: bigint, sB: number, sT: number, kB: number, kT: number, out: bigint, lse: bigint,
    B: number, T: number, H: number, Hkv: number, Dh: number, scale: number, causal: boolean, window: number, Tk: number, bias: bigint, bB: number, bH: number): void;
  /** With a bias, dscores: contiguous [B, H, T, Tk], the gradient of the biased scores. */
  attentionBackward(dtype: number, q: bigint, k: bigint, v: bigint, sB: number, sT: number, kB: number, kT: number, out: bigint, dout: bigint, lse: bigint,
    dq: bigint, dk: bigint, dv: bigint, B: number, T: number, H: number, Hkv: number, Dh: number, scale: number, causal: boolean, window: number,
    Tk: number, bias: bigint, bB: number, bH: number, dscores: bigint): void;
  // kernels_extra.cu. `width` codes are copy codes (element bytes 4, 2, 8, 1 → 0, 1, 2, 3); a null pointer is 0n.
  /** Bool bytes: 0 and, 1 or (broadcast by the strides), 2 not (b unused). */
  logic(code: number, a: bigint, b: bigint, out: bigint, dims: number[], sa: number[], sb: number[]): void;
  isNaN(dtype: number, x: bigint, out: bigint, n: number): void;
  /** out[i] = data[Σ k_d·dataStrides_d + idx[i]·axisStride] over the indices' dims (dataStrides 0 on the axis). */
  gatherElements(width: number, data: bigint, idx: bigint, out: bigint, dims: number[], dataStrides: number[], axisStride: number, axisDim: number): void;
  scatterElementsAdd(dtype: number, g: bigint, idx: bigint, acc: bigint, dims: number[], accStrides: number[], axisStride: number, axisDim: number): void;
  trilu(width: number, x: bigint, out: bigint, n: number, rows: number, cols: number, k: number, upper: boolean): void;
  /** Element i keeps when draw i+1 of src/core/util/random.ts's generator from `state` is ≥ threshold (of 2³²). */
  dropout(dtype: number, x: bigint, y: bigint, mask: bigint, n: number, state: number, threshold: number, scale: number): void;
  /** BatchNorm over [N, C, inner]; mean, var and the sums are float32 [C]. */
  bnStats(dtype: number, x: bigint, mean: bigint, variance: bigint, N: number, C: number, inner: number): void;
  bnForward(dtype: number, x: bigint, scale: bigint, bias: bigint, mean: bigint, variance: bigint, y: bigint, N: number, C: number, inner: number, eps: number): void;
  bnRunning(dtype: number, rm: bigint, rv: bigint, mean: bigint, variance: bigint, rmOut: bigint, rvOut: bigint, C: number, momentum: number): void;
  bnGradSums(dtype: number, g: bigint, x: bigint, mean: bigint, variance: bigint, sumG: bigint, sumGX: bigint, N: number, C: number, inner: number, eps: number): void;
  bnGradInput(dtype: number, g: bigint, x: bigint, scale: bigint, mean: bigint, variance: bigint, sumG: bigint, sumGX: bigint, dx: bigint,
    N: number, C: number, inner: number, eps: number, training: boolean): void;
  /** `window`: 21 numbers, three each of input size, kernel, output size, stride, leading pad, dilation, trailing pad. */
  im2col(width: number, x: bigint, col: bigint, images: number, channels: number, window: number[]): void;
  col2im(dtype: number, col: bigint, dx: bigint, images: number, channels: number, window: number[]): void;
  maxPool(dtype: number, x: bigint, y: bigint, indices: bigint, planes: number, window: number[]): void;
  maxPoolGrad(dtype: number, g: bigint, x: bigint, dx: bigint, planes: number, window: number[]): void;
  avgPool(dtype: number, x: bigint, y: bigint, planes: number, window: number[], includePad: boolean): void;
  avgPoolGrad(dtype: number, g: bigint, dx: bigint, planes: number, window: number[], includePad: boolean): void;
  /** RMSNormalization over rows [rows, cols]; gamma read at j mod gammaLen. */
  rmsnorm(dtype: number, x: bigint, gamma: bigint, y: bigint, rows: number, cols: number, gammaLen: number, eps: number): void;
  rmsnormGradInput(dtype: number, g: bigint, x: bigint, gamma: bigint, dx: bigint, rows: number, cols: number, gammaLen: number, eps: number): void;
  rmsnormGradParams(dtype: number, g: bigint, x: bigint, dgamma: bigint, rows: number, cols: number, eps: number): void;
  /** Element (b, s, h, d) at b·sB + s·sS + h·sH + d; caches [cacheRows, rd/2]; pos int64 [B, S] or 0n (row b·S + s). */
  rotary(dtype: number, x: bigint, cos: bigint, sin: bigint, pos: bigint, out: bigint, B: number, S: number, H: number, D: number,
    sB: number, sS: number, sH: number, rd: number, interleaved: boolean, cacheRows: number): void;
  /** Along dim of [outer, dim, inner]. */
  cumsum(dtype: number, x: bigint, out: bigint, outer: number, dim: number, inner: number, exclusive: boolean, reverse: boolean): void;
  /** mode 0 constant, 1 reflect, 2 edge; begin: leading pads per dim (negative crops). */
  pad(dtype: number, x: bigint, out: bigint, outDims: number[], inDims: number[], begin: number[], mode: number, value: number): void;
  /** acc float32 [inDims], zeroed by the caller. */
  padGrad(dtype: number, g: bigint, acc: bigint, gDims: number[], inDims: number[], begin: number[], mode: number): void;
  /** y = act(gate) · up over n elements; act 0 silu, 1 gelu_tanh, 2 gelu. */
  gatedUnit(dtype: number, gate: bigint, up: bigint, y: bigint, n: number, act: number): void;
  /** dup = dy · act(gate), dgate = dy · up · act′(gate) over n elements, in one pass. */
  gatedUnitGrad(dtype: number, dy: bigint, gate: bigint, up: bigint, dgate: bigint, dup: bigint, n: number, act: number): void;
  /**
   * GatherND over batch × tuples × slice output elements: element (b, j, q) reads data at
   * b·batchStride + Σ_a wrap(idx[(b·tuples + j)·k + a])·strides[a] + q (k = dims.length ≤ 6; idx
   * int32 where idx32, else int64); a tuple out of range gives 0.
   */
  gatherND(width: number, data: bigint, idx: bigint, idx32: boolean, out: bigint, batch: number, tuples: number, slice: number, batchStride: number,
    dims: number[], strides: number[]): void;
  /** Its scatter: acc (float32, zeroed by the caller) at that offset += g (b, j, q); tuples out of range are skipped. */
  gatherNDAdd(dtype: number, g: bigint, idx: bigint, idx32: boolean, acc: bigint, batch: number, tuples: number, slice: number, batchStride: number,
    dims: number[], strides: number[]): void;
}

let cached: NativeCuda | null | undefined;

/** The built addon (native/build/cleave_cuda.node), or null where it was not built (no nvcc). */
export function nativeCuda(): NativeCuda | null {
  if (cached !== undefined) return cached;
  const here = fileURLToPath(new URL('.', import.meta.url));
  // From runtime/backends/cuda (sources) or dist/runtime/backends/cuda (build), up to the repo root.
  const roots = [resolve(here, '..', '..', '..'), resolve(here, '..', '..', '..', '..')];
  const file = roots.map((r) => join(r, 'native', 'build', 'cleave_cuda.node')).find((f) => existsSync(f));
  cached = file ? (createRequire(import.meta.url)(file) as NativeCuda) : null;
  return cached;
}

/** The addon and a GPU, or an error saying which is missing. */
export function requireCuda(): NativeCuda {
  const n = nativeCuda();
  if (!n) throw new CleaveError('the CUDA addon is not built (nvcc was not found at install); run npm run build:native on a machine with the CUDA toolkit');
  if (!n.info()) throw new CleaveError('no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)');
  return n;
}

/** True where CUDA tests can run: the addon is built and a device is visible. */
export const cudaAvailable = (): boolean => !!nativeCuda()?.info();
