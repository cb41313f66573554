// The CUDA addon's functions in JavaScript over host memory, so that the CUDA backend's TypeScript
// (registry kernels composing device calls, pointer offsets, strides, GEMM arguments, the rank
// backend) runs on machines without a GPU. Each function follows its kernel's contract in
// native/src (kernels.cu, kernels_extra.cu, cuBLAS's column-major GEMM); the window and pooling
// kernels are transliterated loop for loop. Floats are stored as the device stores them (float32,
// or bfloat16 rounded to nearest even) and computed in doubles. What this cannot check is the CUDA
// code itself: the GPU tests in test/gpu do.
import type { NativeCuda } from '../../runtime/backends/cuda/native.js';
import { bf16ToFloat, floatToBf16, floatToHalf, halfToFloat } from '../../src/core/ir/tensor.js';
import { erf, geluTanh, geluTanhGrad } from '../../src/core/ops/math.js';
import { type BinaryOp, type CompareOp, nativeName } from '../../src/core/ops/native_codes.js';

interface Block { base: bigint; bytes: Uint8Array }

/** Element access to device memory at an address: floats (dtype 0 f32, 1 bf16, 2 f16) as numbers. */
interface Floats { get(i: number): number; set(i: number, v: number): void }
/** Raw elements of a copy width (0: 4 bytes, 1: 2, 2: 8, 3: 1), moved bit for bit. */
interface Raw { get(i: number): number | bigint; set(i: number, v: number | bigint): void }

const GAP = 4096n;
/**
 * Every 16-bit pattern's value, as bf16ToFloat and halfToFloat give it: reading a 16-bit float is a
 * look-up (a GEMM reads each operand element once per product, which made decoding most of the time).
 */
const BF16_VALUES = Float64Array.from({ length: 65536 }, (_, h) => bf16ToFloat(h));
const HALF_VALUES = Float64Array.from({ length: 65536 }, (_, h) => halfToFloat(h));
const WIDTH_BYTES = [4, 2, 8, 1];

/** Element strides of q (sB, sT) and of k, v (kB, kT); G query heads per key/value head. */
interface AttnBias { v: Floats; bB: number; bH: number }
interface AttnStrides { sB: number; sT: number; kB: number; kT: number; G: number }

export class HostCuda implements Partial<NativeCuda> {
  private readonly blocks: Block[] = [];
  private next = 1n << 20n;
  peak = 0;
  private used = 0;
  /** Calls made through `native`, by function name (a graph launch's replayed kernels not among them). */
  readonly calls = new Map<string, number>();
  /** Calls of functions the emulation lacks (a Proxy reports them by name). */
  readonly native: NativeCuda;

  /**
   * Stream capture, emulated: while recording, kernel calls are kept (not run) and replayed by
   * graphLaunch; allocations happen at once and stay until the graph goes (the graph's memory), and
   * host copies or waits fail as they do on a capturing stream.
   */
  private recording: { calls: (() => void)[]; blocks: bigint[] } | undefined;
  private readonly graphs = new Map<bigint, { calls: (() => void)[]; blocks: bigint[] }>();
  private nextGraph = 1n;
  private static readonly HOST = new Set(['upload', 'download', 'synchronize', 'memInfo', 'info']);
  private static readonly MEMORY = new Set(['alloc', 'free', 'allocStatic', 'freeStatic']);
  /** Not stream work: CUDA makes and destroys events at once, capturing or not. */
  private static readonly OBJECTS = new Set(['eventCreate', 'eventDestroy']);

  constructor() {
    const self = this as unknown as Record<string, unknown>;
    this.native = new Proxy(this, {
      get: (t, k) => {
        const name = String(k);
        const f = self[name];
        if (typeof f !== 'function') return () => { throw new Error(`the host CUDA emulation has no ${name}`); };
        const bound = (f as (...a: unknown[]) => unknown).bind(t);
        // Counted here: what the caller enqueued itself (a graph's replays are not).
        const call = (...args: unknown[]) => {
          t.calls.set(name, (t.calls.get(name) ?? 0) + 1);
          t.ticks++;
          return bound(...args);
        };
        if (!t.recording || name.startsWith('graph') || HostCuda.MEMORY.has(name) || HostCuda.OBJECTS.has(name)) return call;
        if (HostCuda.HOST.has(name)) return () => { throw new Error(`${name}: operation not permitted when stream is capturing`); };
        return (...args: unknown[]) => {
          t.calls.set(name, (t.calls.get(name) ?? 0) + 1);
          // A GEMM says at once whether it fuses its epilogue; only one that does is recorded.
          if (name === 'gemm' && HostCuda.refusesEpilogue(args)) return false;
          t.recording!.calls.push(() => bound(...args));
          return name === 'gemm' ? true : undefined;
        };
      },
    }) as unknown as NativeCuda;
  }

  // --- events (one stream here: an event is the call count when it was recorded) -----------

  /** The emulated clock: calls made so far (a kernel takes one tick, 0.01 ms). */
  private ticks = 0;
  private readonly events = new Map<bigint, number | undefined>();
  private nextEvent = 1n << 40n;

  eventCreate(): bigint {
    const id = this.nextEvent++;
    this.events.set(id, undefined);
    return id;
  }

  eventDestroy(ev: bigint): void {
    if (!this.events.delete(ev)) throw new Error(`no event ${ev}`);
  }

  eventRecord(ev: bigint): void {
    if (!this.events.has(ev)) throw new Error(`no event ${ev}`);
    this.events.set(ev, this.ticks);
  }

  eventQuery(ev: bigint): boolean {
    if (!this.events.has(ev)) throw new Error(`no event ${ev}`);
    return true;
  }

  eventElapsed(a: bigint, b: bigint): number {
    const x = this.events.get(a), y = this.events.get(b);
    if (x === undefined || y === undefined) throw new Error('cudaEventElapsedTime: an event was not recorded');
    return (y - x) * 0.01;
  }

  streamWait(): void {}

  /** Events still alive (a leak check). */
  get liveEvents(): number {
    return this.events.size;
  }

  graphBegin(): void {
    if (this.recording) throw new Error('the stream is capturing already');
    this.recording = { calls: [], blocks: [] };
  }

  graphEnd(): bigint {
    if (!this.recording) throw new Error('the stream is not capturing');
    const id = this.nextGraph++;
    this.graphs.set(id, this.recording);
    this.recording = undefined;
    return id;
  }

  graphAbort(): void {
    const r = this.recording;
    this.recording = undefined;
    for (const b of r?.blocks ?? []) if (this.blocks.some((x) => x.base === b)) this.free(b);
  }

  graphLaunch(id: bigint): void {
    const g = this.graphs.get(id);
    if (!g) throw new Error(`no graph ${id}`);
    for (const c of g.calls) c();
  }

  graphDestroy(id: bigint): void {
    const g = this.graphs.get(id);
    if (!g) throw new Error(`no graph ${id}`);
    this.graphs.delete(id);
    for (const b of g.blocks) if (this.blocks.some((x) => x.base === b)) this.free(b);
  }

  get liveBlocks(): number {
    return this.blocks.length;
  }

  private find(ptr: bigint): { block: Block; offset: number } {
    for (const b of this.blocks) {
      if (ptr >= b.base && ptr < b.base + BigInt(b.bytes.length) + 1n) return { block: b, offset: Number(ptr - b.base) };
    }
    throw new Error(`address ${ptr} is not in any live allocation`);
  }

  /** Bytes [ptr, ptr + n) of one allocation; reading past its end is an error, as on the device it would be a fault. */
  private bytes(ptr: bigint, n: number): Uint8Array {
    const { block, offset } = this.find(ptr);
    if (offset + n > block.bytes.length) throw new Error(`access of ${n} bytes at offset ${offset} overruns an allocation of ${block.bytes.length}`);
    return block.bytes.subarray(offset, offset + n);
  }

  private floats(dtype: number, ptr: bigint, n: number): Floats {
    if (dtype === 0) {
      const b = this.bytes(ptr, 4 * n);
      const a = new Float32Array(b.buffer, b.byteOffset, n);
      return { get: (i) => at(a, i, n), set: (i, v) => { check(i, n); a[i] = v; } };
    }
    if (dtype !== 1 && dtype !== 2) throw new Error(`float dtype ${dtype}`);
    const b = this.bytes(ptr, 2 * n);
    const a = new Uint16Array(b.buffer, b.byteOffset, n);
    const [from, to] = dtype === 1 ? [BF16_VALUES, floatToBf16] : [HALF_VALUES, floatToHalf];
    return { get: (i) => from[at(a, i, n)]!, set: (i, v) => { check(i, n); a[i] = to(v); } };
  }

  private raw(width: number, ptr: bigint, n: number): Raw {
    const b = this.bytes(ptr, WIDTH_BYTES[width]! * n);
    const a = width === 0 ? new Uint32Array(b.buffer, b.byteOffset, n) : width === 1 ? new Uint16Array(b.buffer, b.byteOffset, n)
      : width === 2 ? new BigUint64Array(b.buffer, b.byteOffset, n) : new Uint8Array(b.buffer, b.byteOffset, n);
    return { get: (i) => at(a as ArrayLike<number | bigint>, i, n), set: (i, v) => { check(i, n); (a as unknown as (number | bigint)[])[i] = v; } };
  }

  private u8(ptr: bigint, n: number): Uint8Array {
    return this.bytes(ptr, n);
  }

  private i64(ptr: bigint, n: number): { get(i: number): number } {
    const b = this.bytes(ptr, 8 * n);
    const a = new BigInt64Array(b.buffer, b.byteOffset, n);
    return { get: (i) => Number(at(a, i, n)) };
  }

  /** Elements an operand spans when read with these strides from `base` (its largest offset + 1). */
  private static span(dims: readonly number[], strides: readonly number[], base = 0): number {
    return base + dims.reduce((s, d, i) => s + (d - 1) * Math.abs(strides[i]!), 0) + 1;
  }

  // --- memory ---------------------------------------------------------------------------------

  info() {
    return { devices: 1, name: 'host emulation', computeCapability: '0.0', memoryBytes: 2 ** 34, multiprocessors: 1 };
  }

  alloc(bytes: number): bigint {
    const base = this.next;
    this.recording?.blocks.push(base);
    this.next += BigInt(Math.ceil(bytes / 256) * 256) + GAP;
    // Fresh device memory is not zeroed: NaNs show reads of what no kernel wrote.
    const b = new Uint8Array(bytes).fill(0xff);
    this.blocks.push({ base, bytes: b });
    this.used += bytes;
    this.peak = Math.max(this.peak, this.used);
    return base;
  }

  /** Memory outside the pool (feed buffers, static workspaces): the same blocks here. */
  allocStatic(bytes: number): bigint {
    return this.alloc(bytes);
  }

  freeStatic(ptr: bigint): void {
    this.free(ptr);
  }

  free(ptr: bigint): void {
    // Freed inside a capture: the graph keeps its memory until it goes (the graph's pool).
    if (this.recording) return;
    const i = this.blocks.findIndex((b) => b.base === ptr);
    if (i < 0) throw new Error(`free of ${ptr}, which is not the start of a live allocation`);
    this.used -= this.blocks[i]!.bytes.length;
    this.blocks.splice(i, 1);
  }

  upload(ptr: bigint, data: ArrayBufferView): void {
    this.bytes(ptr, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  download(ptr: bigint, bytes: number): ArrayBuffer {
    return this.bytes(ptr, bytes).slice().buffer;
  }

  synchronize(): void {}

  memInfo(): { freeBytes: number; totalBytes: number; peakBytes: number } {
    return { freeBytes: 2 ** 34 - this.used, totalBytes: 2 ** 34, peakBytes: this.peak };
  }

  // --- kernels.cu -----------------------------------------------------------------------------

  unary(code: number, dtype: number, x: bigint, out: bigint, n: number, alpha: number, beta: number): void {
    const a = this.floats(dtype, x, n), o = this.floats(dtype, out, n);
    const op = nativeName('unary', code);
    const f = (v: number): number => {
      switch (op) {
        case 'neg': return -v;
        case 'abs': return Math.abs(v);
        case 'exp': return Math.exp(v);
        case 'log': return Math.log(v);
        case 'sqrt': return Math.sqrt(v);
        case 'reciprocal': return 1 / v;
        case 'tanh': return Math.tanh(v);
        case 'sigmoid': return 1 / (1 + Math.exp(-v));
        case 'relu': return v > 0 ? v : 0;
        case 'leaky_relu': return v >= 0 ? v : alpha * v;
        case 'gelu': return 0.5 * v * (1 + erf(v / Math.SQRT2));
        case 'gelu_tanh': return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
        case 'erf': return erf(v);
        case 'hard_sigmoid': return Math.min(1, Math.max(0, alpha * v + beta));
        case 'hard_swish': return v * Math.min(1, Math.max(0, v / 6 + 0.5));
        case 'floor': return Math.floor(v);
        case 'ceil': return Math.ceil(v);
        case 'clip': { const y = v < alpha ? alpha : v; return y > beta ? beta : y; }
        case 'sin': return Math.sin(v);
        case 'cos': return Math.cos(v);
      }
    };
    for (let i = 0; i < n; i++) o.set(i, f(a.get(i)));
  }

  /** Offsets of each index of `dims` under several stride lists (the kernels' operand_offsets). */
  private static walk(dims: readonly number[], strides: readonly (readonly number[])[], visit: (i: number, offs: number[]) => void): void {
    const n = dims.reduce((a, b) => a * b, 1);
    for (let i = 0; i < n; i++) {
      let rem = i;
      const offs = strides.map(() => 0);
      for (let d = dims.length - 1; d >= 0; d--) {
        const k = rem % dims[d]!;
        rem = Math.floor(rem / dims[d]!);
        strides.forEach((s, j) => (offs[j]! += k * s[d]!));
      }
      visit(i, offs);
    }
  }

  binary(code: number, dtype: number, a: bigint, b: bigint, out: bigint, dims: number[], sa: number[], sb: number[]): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const x = this.floats(dtype, a, HostCuda.span(dims, sa)), y = this.floats(dtype, b, HostCuda.span(dims, sb)), o = this.floats(dtype, out, n);
    const fs: Record<BinaryOp, (p: number, q: number) => number> = { add: (p, q) => p + q, sub: (p, q) => p - q, mul: (p, q) => p * q, div: (p, q) => p / q, pow: (p, q) => p ** q, min: fminf, max: fmaxf };
    const f = fs[nativeName('binary', code)];
    // Reads first, then writes: an output that is also an input (in-place folds) reads old values, as each CUDA thread does.
    const vals: number[] = [];
    HostCuda.walk(dims, [sa, sb], (i, [ia, ib]) => (vals[i] = f(x.get(ia!), y.get(ib!))));
    vals.forEach((v, i) => o.set(i, v));
  }

  compare(code: number, dtype: number, a: bigint, b: bigint, out: bigint, dims: number[], sa: number[], sb: number[]): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const x = this.floats(dtype, a, HostCuda.span(dims, sa)), y = this.floats(dtype, b, HostCuda.span(dims, sb)), o = this.u8(out, n);
    const fs: Record<CompareOp, (p: number, q: number) => boolean> = {
      equal: (p, q) => p === q, less: (p, q) => p < q, greater: (p, q) => p > q, less_equal: (p, q) => p <= q, greater_equal: (p, q) => p >= q,
      and: (p, q) => p !== 0 && q !== 0, or: (p, q) => p !== 0 || q !== 0,
    };
    const f = fs[nativeName('compare', code)];
    HostCuda.walk(dims, [sa, sb], (i, [ia, ib]) => (o[i] = f(x.get(ia!), y.get(ib!)) ? 1 : 0));
  }

  where(dtype: number, c: bigint, x: bigint, y: bigint, out: bigint, dims: number[], sc: number[], sx: number[], sy: number[]): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const cb = this.u8(c, HostCuda.span(dims, sc)), xv = this.floats(dtype, x, HostCuda.span(dims, sx)), yv = this.floats(dtype, y, HostCuda.span(dims, sy));
    const o = this.floats(dtype, out, n);
    HostCuda.walk(dims, [sc, sx, sy], (i, [ic, ix, iy]) => o.set(i, cb[ic!] ? xv.get(ix!) : yv.get(iy!)));
  }

  /** Codes 0-2 floats, 3 int64, 4 int32, 5 bool: into integers by truncation, into bools by ≠ 0. */
  cast(from: number, to: number, x: bigint, out: bigint, n: number): void {
    const io = (code: number, ptr: bigint): { get(i: number): number; set(i: number, v: number): void } => {
      if (code <= 2) return this.floats(code, ptr, n);
      if (code === 3) {
        const b = this.bytes(ptr, 8 * n), a = new BigInt64Array(b.buffer, b.byteOffset, n);
        return { get: (i) => Number(at(a, i, n)), set: (i, v) => { check(i, n); a[i] = BigInt(Math.trunc(v)); } };
      }
      const b = this.bytes(ptr, (code === 4 ? 4 : 1) * n);
      const a = code === 4 ? new Int32Array(b.buffer, b.byteOffset, n) : new Uint8Array(b.buffer, b.byteOffset, n);
      return { get: (i) => at(a, i, n), set: (i, v) => { check(i, n); a[i] = code === 4 ? Math.trunc(v) : v !== 0 ? 1 : 0; } };
    };
    const a = io(from, x), o = io(to, out);
    for (let i = 0; i < n; i++) o.set(i, a.get(i));
  }

  fill(dtype: number, out: bigint, n: number, value: number): void {
    const o = this.floats(dtype, out, n);
    for (let i = 0; i < n; i++) o.set(i, value);
  }

  stridedCopy(width: number, x: bigint, out: bigint, dims: number[], strides: number[], base: number): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const src = this.raw(width, x, HostCuda.span(dims, strides, base)), dst = this.raw(width, out, n);
    HostCuda.walk(dims, [strides], (i, [o]) => dst.set(i, src.get(base + o!)));
  }

  copyRegion(width: number, x: bigint, out: bigint, dims: number[], inStrides: number[], outStrides: number[], inBase: number, outBase: number): void {
    const src = this.raw(width, x, HostCuda.span(dims, inStrides, inBase)), dst = this.raw(width, out, HostCuda.span(dims, outStrides, outBase));
    HostCuda.walk(dims, [inStrides, outStrides], (_, [i, o]) => dst.set(outBase + o!, src.get(inBase + i!)));
  }

  reduce(op: number, dtype: number, x: bigint, out: bigint, outDims: number[], outStrides: number[], redDims: number[], redStrides: number[]): void {
    const nout = outDims.reduce((p, q) => p * q, 1), nred = redDims.reduce((p, q) => p * q, 1);
    const src = this.floats(dtype, x, HostCuda.span(outDims, outStrides) + HostCuda.span(redDims, redStrides) - 1), o = this.floats(dtype, out, nout);
    const kind = nativeName('reduce', op);
    HostCuda.walk(outDims, [outStrides], (j, [base]) => {
      let acc = kind === 'max' ? -Infinity : 0;
      HostCuda.walk(redDims, [redStrides], (_, [r]) => {
        const v = src.get(base! + r!);
        acc = kind === 'max' ? fmaxf(acc, v) : acc + v;
      });
      o.set(j, kind === 'mean' ? acc / nred : acc);
    });
  }

  /** The device tables of the multi-tensor kernels: (tensor, start) per chunk, six int64 words per tensor. */
  private adamTables(tensors: bigint, chunks: bigint, nchunks: number): { table: BigInt64Array; ts: BigInt64Array } {
    const words = (ptr: bigint, n: number): BigInt64Array => {
      const b = this.bytes(ptr, 8 * n);
      return new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + 8 * n));
    };
    const table = chunks === 0n ? new BigInt64Array(0) : words(chunks, 2 * nchunks);
    const count = nchunks ? Math.max(...Array.from({ length: nchunks }, (_, c) => Number(table[2 * c]!))) + 1 : 0;
    return { table, ts: count ? words(tensors, 6 * count) : new BigInt64Array(0) };
  }

  sumsqMulti(tensors: bigint, chunks: bigint, nchunks: number, chunk: number, out: bigint): void {
    const { table, ts } = this.adamTables(tensors, chunks, nchunks);
    let s = 0;
    for (let c = 0; c < nchunks; c++) {
      const t = Number(table[2 * c]!), start = Number(table[2 * c + 1]!);
      const g = ts[6 * t + 1]!, n = Number(ts[6 * t + 5]!);
      const G = this.floats(0, g, n);
      for (let i = start; i < Math.min(n, start + chunk); i++) s += G.get(i) ** 2;
    }
    this.floats(0, out, 1).set(0, s);
  }

  /** The multi-tensor AdamW: reads the device tables (int64 words) and updates each chunk as the kernel does. */
  adamwMulti(tensors: bigint, chunks: bigint, nchunks: number, chunk: number, copyDtype: number, lr: number, b1: number, b2: number, eps: number, wd: number,
    bc1: number, bc2: number, gscale: number): void {
    const { table, ts } = this.adamTables(tensors, chunks, nchunks);
    for (let c = 0; c < nchunks; c++) {
      const t = Number(table[2 * c]!), start = Number(table[2 * c + 1]!);
      const [w, g, m, v, copy, n] = Array.from(ts.subarray(6 * t, 6 * t + 6));
      const len = Math.min(Number(n!), start + chunk) - start;
      const W = this.floats(0, w!, Number(n)), G = this.floats(0, g!, Number(n)), Mm = this.floats(0, m!, Number(n)), V = this.floats(0, v!, Number(n));
      const H = copy ? this.floats(copyDtype, copy, Number(n)) : undefined;
      for (let i = start; i < start + len; i++) {
        const gi = G.get(i) * gscale;
        const mi = b1 * Mm.get(i) + (1 - b1) * gi, vi = b2 * V.get(i) + (1 - b2) * gi * gi;
        Mm.set(i, mi);
        V.set(i, vi);
        const wi = W.get(i) * (1 - lr * wd) - (lr / bc1) * (mi / (Math.sqrt(vi / bc2) + eps));
        W.set(i, Math.fround(wi));
        H?.set(i, wi);
      }
    }
  }

  /** Where the emulated cuBLASLt has no fused epilogue: m (the output's row length) not a multiple of 8. */
  private static refusesEpilogue(args: readonly unknown[]): boolean {
    return (args[19] ?? 0) !== 0 && (args[3] as number) % 8 !== 0;
  }

  /**
   * cuBLAS's strided batched GEMM, column-major: C = epilogue(alpha·op(A)·op(B) + beta·C) (C not
   * read when beta is 0). Epilogues as native/src/gemm.h; like cuBLASLt, it refuses one (returns
   * false, writing nothing) where m is not a multiple of 8, so tests reach the unfused path.
   */
  gemm(dtype: number, ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number, A: bigint, lda: number, sA: number,
    B: bigint, ldb: number, sB: number, beta: number, C: bigint, ldc: number, sC: number, batch: number, cDtype = dtype,
    epilogue = 0, bias = 0n, aux = 0n, auxLd = 0): boolean {
    if (HostCuda.refusesEpilogue([dtype, ta, tb, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch, cDtype, epilogue])) return false;
    const aCols = ta ? m : k, bCols = tb ? k : n;
    const a = this.floats(dtype, A, (batch - 1) * sA + lda * (aCols - 1) + (ta ? k : m));
    const b = this.floats(dtype, B, (batch - 1) * sB + ldb * (bCols - 1) + (tb ? n : k));
    const c = this.floats(cDtype, C, (batch - 1) * sC + ldc * (n - 1) + m);
    const bv = epilogue === 1 || epilogue === 2 ? this.floats(dtype, bias, m) : undefined;
    const x = aux !== 0n ? this.floats(dtype, aux, auxLd * (n - 1) + m) : undefined;
    for (let q = 0; q < batch; q++) {
      for (let j = 0; j < n; j++) {
        for (let i = 0; i < m; i++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += a.get(q * sA + (ta ? p + i * lda : i + p * lda)) * b.get(q * sB + (tb ? j + p * ldb : p + j * ldb));
          const at = q * sC + i + j * ldc;
          let v = alpha * s + (beta === 0 ? 0 : beta * c.get(at));
          if (bv) v += bv.get(i);
          if (epilogue === 2) {
            x?.set(i + j * auxLd, v);
            v = geluTanh(v);
          } else if (epilogue === 3) v *= geluTanhGrad(x!.get(i + j * auxLd));
          c.set(at, v);
        }
      }
    }
    return true;
  }

  sceForward(dtype: number, scores: bigint, labels: bigint, loss: bigint, weight: bigint, rows: number, cols: number, ignore: number): void {
    const s = this.floats(dtype, scores, rows * cols), l = this.i64(labels, rows), lo = this.floats(0, loss, rows), w = this.floats(0, weight, rows);
    for (let r = 0; r < rows; r++) {
      const { mx, sum } = rowSoftmax(s, r, cols);
      const y = l.get(r), skip = y === ignore;
      lo.set(r, skip ? 0 : mx + Math.log(sum) - s.get(r * cols + y));
      w.set(r, skip ? 0 : 1);
    }
  }

  sceBackward(dtype: number, scores: bigint, labels: bigint, up: bigint, wsum: bigint, ds: bigint, rows: number, cols: number, ignore: number, mean: boolean): void {
    const s = this.floats(dtype, scores, rows * cols), l = this.i64(labels, rows), u = this.floats(0, up, 1).get(0), ws = this.floats(0, wsum, 1).get(0);
    const d = this.floats(dtype, ds, rows * cols);
    for (let r = 0; r < rows; r++) {
      const { mx, sum } = rowSoftmax(s, r, cols);
      const y = l.get(r);
      const scale = y === ignore ? 0 : mean ? (ws > 0 ? u / ws : 0) : u;
      for (let j = 0; j < cols; j++) d.set(r * cols + j, (Math.exp(s.get(r * cols + j) - mx) / sum - (j === y ? 1 : 0)) * scale);
    }
  }

  // --- kernels_extra.cu -----------------------------------------------------------------------

  logic(code: number, a: bigint, b: bigint, out: bigint, dims: number[], sa: number[], sb: number[]): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const op = nativeName('logic', code);
    const x = this.u8(a, HostCuda.span(dims, sa)), y = op === 'not' ? null : this.u8(b, HostCuda.span(dims, sb)), o = this.u8(out, n);
    HostCuda.walk(dims, [sa, sb], (i, [ia, ib]) => {
      const p = x[ia!] !== 0;
      o[i] = (op === 'and' ? p && y![ib!] !== 0 : op === 'or' ? p || y![ib!] !== 0 : !p) ? 1 : 0;
    });
  }

  isNaN(dtype: number, x: bigint, out: bigint, n: number): void {
    const a = this.floats(dtype, x, n), o = this.u8(out, n);
    for (let i = 0; i < n; i++) o[i] = Number.isNaN(a.get(i)) ? 1 : 0;
  }

  gatherElements(width: number, data: bigint, idx: bigint, out: bigint, dims: number[], dataStrides: number[], axisStride: number, axisDim: number): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const src = this.raw(width, data, HostCuda.span(dims, dataStrides) + (axisDim - 1) * axisStride), ind = this.i64(idx, n), dst = this.raw(width, out, n);
    HostCuda.walk(dims, [dataStrides], (i, [off]) => {
      let k = ind.get(i);
      if (k < 0) k += axisDim;
      dst.set(i, k >= 0 && k < axisDim ? src.get(off! + k * axisStride) : width === 2 ? 0n : 0);
    });
  }

  scatterElementsAdd(dtype: number, g: bigint, idx: bigint, acc: bigint, dims: number[], accStrides: number[], axisStride: number, axisDim: number): void {
    const n = dims.reduce((p, q) => p * q, 1);
    const gv = this.floats(dtype, g, n), ind = this.i64(idx, n), a = this.floats(0, acc, HostCuda.span(dims, accStrides) + (axisDim - 1) * axisStride);
    HostCuda.walk(dims, [accStrides], (i, [off]) => {
      let k = ind.get(i);
      if (k < 0) k += axisDim;
      if (k >= 0 && k < axisDim) a.set(off! + k * axisStride, a.get(off! + k * axisStride) + gv.get(i));
    });
  }

  // --- the transformer path (embedding, LayerNorm, softmax, GELU's gradient, fused attention) ---

  gather(dtype: number, data: bigint, idx: bigint, out: bigint, outer: number, dim: number, nidx: number, inner: number): void {
    const src = this.floats(dtype, data, outer * dim * inner), ind = this.i64(idx, nidx), dst = this.floats(dtype, out, outer * nidx * inner);
    for (let o = 0; o < outer; o++) for (let j = 0; j < nidx; j++) {
      let k = ind.get(j);
      if (k < 0) k += dim;
      for (let q = 0; q < inner; q++) dst.set((o * nidx + j) * inner + q, src.get((o * dim + k) * inner + q));
    }
  }

  scatterAdd(dtype: number, g: bigint, idx: bigint, acc: bigint, outer: number, dim: number, nidx: number, inner: number): void {
    const gv = this.floats(dtype, g, outer * nidx * inner), ind = this.i64(idx, nidx), a = this.floats(0, acc, outer * dim * inner);
    for (let o = 0; o < outer; o++) for (let j = 0; j < nidx; j++) {
      let k = ind.get(j);
      if (k < 0) k += dim;
      for (let q = 0; q < inner; q++) {
        const at = (o * dim + k) * inner + q;
        a.set(at, a.get(at) + gv.get((o * nidx + j) * inner + q));
      }
    }
  }

  /** Mean and 1/√(var + eps) of row r, two passes as the kernels do. */
  private rowStats(x: Floats, r: number, cols: number, eps: number): [number, number] {
    let m = 0;
    for (let j = 0; j < cols; j++) m += x.get(r * cols + j);
    m /= cols;
    let v = 0;
    for (let j = 0; j < cols; j++) v += (x.get(r * cols + j) - m) ** 2;
    return [m, 1 / Math.sqrt(v / cols + eps)];
  }

  layernorm(dtype: number, x: bigint, g: bigint, b: bigint, y: bigint, rows: number, cols: number, gl: number, bl: number, eps: number): void {
    const X = this.floats(dtype, x, rows * cols), Y = this.floats(dtype, y, rows * cols);
    const G = g ? this.floats(dtype, g, gl) : undefined, Bv = b ? this.floats(dtype, b, bl) : undefined;
    for (let r = 0; r < rows; r++) {
      const [m, inv] = this.rowStats(X, r, cols, eps);
      for (let j = 0; j < cols; j++) Y.set(r * cols + j, (X.get(r * cols + j) - m) * inv * (G ? G.get(j % gl) : 1) + (Bv ? Bv.get(j % bl) : 0));
    }
  }

  layernormGradInput(dtype: number, g: bigint, x: bigint, gamma: bigint, dx: bigint, rows: number, cols: number, gl: number, eps: number): void {
    const Gv = this.floats(dtype, g, rows * cols), X = this.floats(dtype, x, rows * cols), W = this.floats(dtype, gamma, gl), D = this.floats(dtype, dx, rows * cols);
    for (let r = 0; r < rows; r++) {
      const [m, inv] = this.rowStats(X, r, cols, eps);
      let a = 0, b = 0;
      for (let j = 0; j < cols; j++) {
        const d = Gv.get(r * cols + j) * W.get(j % gl);
        a += d;
        b += d * (X.get(r * cols + j) - m) * inv;
      }
      a /= cols;
      b /= cols;
      for (let j = 0; j < cols; j++) D.set(r * cols + j, inv * (Gv.get(r * cols + j) * W.get(j % gl) - a - (X.get(r * cols + j) - m) * inv * b));
    }
  }

  layernormGradParams(dtype: number, g: bigint, x: bigint, dg: bigint, db: bigint, rows: number, cols: number, eps: number): void {
    const Gv = this.floats(dtype, g, rows * cols), X = this.floats(dtype, x, rows * cols), DG = this.floats(dtype, dg, cols), DB = this.floats(dtype, db, cols);
    const a = new Float64Array(cols), b = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const [m, inv] = this.rowStats(X, r, cols, eps);
      for (let j = 0; j < cols; j++) {
        a[j]! += Gv.get(r * cols + j) * (X.get(r * cols + j) - m) * inv;
        b[j]! += Gv.get(r * cols + j);
      }
    }
    for (let j = 0; j < cols; j++) {
      DG.set(j, a[j]!);
      DB.set(j, b[j]!);
    }
  }

  // --- kernels_extra.cu: RMSNorm, RotaryEmbedding, CumSum, Pad ------------------------------

  private static rmsInv(x: Floats, r: number, cols: number, eps: number): number {
    let s = 0;
    for (let j = 0; j < cols; j++) s += x.get(r * cols + j) ** 2;
    return 1 / Math.sqrt(s / cols + eps);
  }

  rmsnorm(dtype: number, x: bigint, gamma: bigint, y: bigint, rows: number, cols: number, gl: number, eps: number): void {
    const X = this.floats(dtype, x, rows * cols), Y = this.floats(dtype, y, rows * cols), G = this.floats(dtype, gamma, gl);
    for (let r = 0; r < rows; r++) {
      const inv = HostCuda.rmsInv(X, r, cols, eps);
      for (let j = 0; j < cols; j++) Y.set(r * cols + j, X.get(r * cols + j) * inv * G.get(j % gl));
    }
  }

  rmsnormGradInput(dtype: number, g: bigint, x: bigint, gamma: bigint, dx: bigint, rows: number, cols: number, gl: number, eps: number): void {
    const Gv = this.floats(dtype, g, rows * cols), X = this.floats(dtype, x, rows * cols), W = this.floats(dtype, gamma, gl), D = this.floats(dtype, dx, rows * cols);
    for (let r = 0; r < rows; r++) {
      const inv = HostCuda.rmsInv(X, r, cols, eps);
      let b = 0;
      for (let j = 0; j < cols; j++) b += Gv.get(r * cols + j) * W.get(j % gl) * X.get(r * cols + j) * inv;
      b /= cols;
      for (let j = 0; j < cols; j++) D.set(r * cols + j, inv * (Gv.get(r * cols + j) * W.get(j % gl) - X.get(r * cols + j) * inv * b));
    }
  }

  rmsnormGradParams(dtype: number, g: bigint, x: bigint, dgamma: bigint, rows: number, cols: number, eps: number): void {
    const Gv = this.floats(dtype, g, rows * cols), X = this.floats(dtype, x, rows * cols), DG = this.floats(dtype, dgamma, cols);
    const a = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const inv = HostCuda.rmsInv(X, r, cols, eps);
      for (let j = 0; j < cols; j++) a[j]! += Gv.get(r * cols + j) * X.get(r * cols + j) * inv;
    }
    for (let j = 0; j < cols; j++) DG.set(j, a[j]!);
  }

  rotary(dtype: number, x: bigint, cos: bigint, sin: bigint, pos: bigint, out: bigint, B: number, S: number, H: number, D: number,
    sB: number, sS: number, sH: number, rd: number, interleaved: boolean, cacheRows: number): void {
    const span = (B - 1) * sB + (S - 1) * sS + (H - 1) * sH + D;
    const X = this.floats(dtype, x, span), O = this.floats(dtype, out, span);
    const half = rd / 2;
    const C = this.floats(dtype, cos, cacheRows * half), Sn = this.floats(dtype, sin, cacheRows * half);
    const P = pos ? this.i64(pos, B * S) : undefined;
    for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) {
      const off = b * sB + s * sS + h * sH + d;
      if (d >= rd) { O.set(off, X.get(off)); continue; }
      const row = P ? P.get(b * S + s) : b * S + s;
      if (row < 0 || row >= cacheRows) { O.set(off, 0); continue; }
      const first = interleaved ? d % 2 === 0 : d < half;
      const j = interleaved ? Math.floor(d / 2) : first ? d : d - half;
      const partner = interleaved ? (first ? d + 1 : d - 1) : first ? d + half : d - half;
      const c = C.get(row * half + j), sn = Sn.get(row * half + j), v = X.get(off), p = X.get(off - d + partner);
      O.set(off, first ? c * v - sn * p : sn * p + c * v);
    }
  }

  cumsum(dtype: number, x: bigint, out: bigint, outer: number, dim: number, inner: number, exclusive: boolean, reverse: boolean): void {
    const n = outer * dim * inner;
    const X = this.floats(dtype, x, n), O = this.floats(dtype, out, n);
    for (let o = 0; o < outer; o++) for (let q = 0; q < inner; q++) {
      let acc = 0;
      for (let k = 0; k < dim; k++) {
        const i = (o * dim + (reverse ? dim - 1 - k : k)) * inner + q;
        const v = X.get(i);
        if (exclusive) { O.set(i, Math.fround(acc)); acc = Math.fround(acc + v); } else { acc = Math.fround(acc + v); O.set(i, acc); }
      }
    }
  }

  /** Offset in the dense input that output index i reads (the kernels' pad_offset), or −1. */
  private static padOffset(outDims: readonly number[], inDims: readonly number[], begin: readonly number[], i: number, mode: number): number {
    let off = 0, stride = 1;
    for (let d = outDims.length - 1; d >= 0; d--) {
      const o = i % outDims[d]!;
      i = Math.floor(i / outDims[d]!);
      const n = inDims[d]!;
      let p = o - begin[d]!;
      if (p < 0 || p >= n) {
        if (mode === 0 || n === 0) return -1;
        p = mode === 2 ? (p < 0 ? 0 : n - 1) : p < 0 ? -p : 2 * (n - 1) - p;
      }
      off += p * stride;
      stride *= n;
    }
    return off;
  }

  pad(dtype: number, x: bigint, out: bigint, outDims: number[], inDims: number[], begin: number[], mode: number, value: number): void {
    const n = outDims.reduce((a, b) => a * b, 1), m = inDims.reduce((a, b) => a * b, 1);
    const X = this.floats(dtype, x, Math.max(1, m)), O = this.floats(dtype, out, n);
    for (let i = 0; i < n; i++) {
      const off = HostCuda.padOffset(outDims, inDims, begin, i, mode);
      O.set(i, off < 0 ? Math.fround(value) : X.get(off));
    }
  }

  padGrad(dtype: number, g: bigint, acc: bigint, gDims: number[], inDims: number[], begin: number[], mode: number): void {
    const n = gDims.reduce((a, b) => a * b, 1), m = inDims.reduce((a, b) => a * b, 1);
    const Gv = this.floats(dtype, g, n), A = this.floats(0, acc, m);
    for (let i = 0; i < n; i++) {
      const off = HostCuda.padOffset(gDims, inDims, begin, i, mode);
      if (off >= 0) A.set(off, A.get(off) + Gv.get(i));
    }
  }

  // --- kernels_extra.cu: GatedUnit ------------------------------------------------------------

  /** gated_act of kernels_extra.cu: act(x) and act′(x) for code 0 silu, 1 gelu_tanh, 2 gelu. */
  private static gatedAct(act: number, x: number): [number, number] {
    switch (act) {
      case 0: {
        const s = 1 / (1 + Math.exp(-x));
        return [x * s, s * (1 + x * (1 - s))];
      }
      case 1: {
        const c = Math.sqrt(2 / Math.PI), k = 0.044715;
        const t = Math.tanh(c * (x + k * x * x * x));
        return [0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x)];
      }
      case 2: {
        const c = 0.5 * (1 + erf(x / Math.SQRT2));
        return [x * c, c + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI)];
      }
      default: throw new Error('GatedUnit: activation code must be 0 (silu), 1 (gelu_tanh) or 2 (gelu)');
    }
  }

  gatedUnit(dtype: number, gate: bigint, up: bigint, y: bigint, n: number, act: number): void {
    if (![0, 1, 2].includes(act)) HostCuda.gatedAct(act, 0);
    const Gt = this.floats(dtype, gate, n), U = this.floats(dtype, up, n), Y = this.floats(dtype, y, n);
    for (let i = 0; i < n; i++) Y.set(i, HostCuda.gatedAct(act, Gt.get(i))[0] * U.get(i));
  }

  gatedUnitGrad(dtype: number, dy: bigint, gate: bigint, up: bigint, dgate: bigint, dup: bigint, n: number, act: number): void {
    if (![0, 1, 2].includes(act)) HostCuda.gatedAct(act, 0);
    const D = this.floats(dtype, dy, n), Gt = this.floats(dtype, gate, n), U = this.floats(dtype, up, n);
    const DG = this.floats(dtype, dgate, n), DU = this.floats(dtype, dup, n);
    for (let i = 0; i < n; i++) {
      // Every element read before either is written, as the kernel does.
      const g = D.get(i), u = U.get(i);
      const [a, slope] = HostCuda.gatedAct(act, Gt.get(i));
      DU.set(i, g * a);
      DG.set(i, g * u * slope);
    }
  }

  /** Data offset of GatherND output element (r = b·tuples + j, q), or −1 where an index is out of range (gather_nd_offset). */
  private static gatherNDOffset(ind: { get(i: number): number }, r: number, q: number, tuples: number, batchStride: number, dims: number[], strides: number[]): number {
    let off = Math.floor(r / tuples) * batchStride + q;
    for (let a = 0; a < dims.length; a++) {
      let v = ind.get(r * dims.length + a);
      if (v < 0) v += dims[a]!;
      if (v < 0 || v >= dims[a]!) return -1;
      off += v * strides[a]!;
    }
    return off;
  }

  private indices(idx: bigint, idx32: boolean, n: number): { get(i: number): number } {
    if (!idx32) return this.i64(idx, n);
    const b = this.bytes(idx, 4 * n);
    const a = new Int32Array(b.buffer, b.byteOffset, n);
    return { get: (i) => at(a, i, n) };
  }

  gatherND(width: number, data: bigint, idx: bigint, idx32: boolean, out: bigint, batch: number, tuples: number, slice: number, batchStride: number,
    dims: number[], strides: number[]): void {
    const n = batch * tuples * slice;
    if (n < 1) return;
    const src = this.raw(width, data, batch * batchStride), ind = this.indices(idx, idx32, batch * tuples * dims.length), dst = this.raw(width, out, n);
    for (let i = 0; i < n; i++) {
      const off = HostCuda.gatherNDOffset(ind, Math.floor(i / slice), i % slice, tuples, batchStride, dims, strides);
      dst.set(i, off >= 0 ? src.get(off) : width === 2 ? 0n : 0);
    }
  }

  gatherNDAdd(dtype: number, g: bigint, idx: bigint, idx32: boolean, acc: bigint, batch: number, tuples: number, slice: number, batchStride: number,
    dims: number[], strides: number[]): void {
    const n = batch * tuples * slice;
    if (n < 1) return;
    const gv = this.floats(dtype, g, n), ind = this.indices(idx, idx32, batch * tuples * dims.length), a = this.floats(0, acc, batch * batchStride);
    for (let i = 0; i < n; i++) {
      const off = HostCuda.gatherNDOffset(ind, Math.floor(i / slice), i % slice, tuples, batchStride, dims, strides);
      if (off >= 0) a.set(off, a.get(off) + gv.get(i));
    }
  }

  softmax(dtype: number, x: bigint, out: bigint, rows: number, cols: number, log: boolean): void {
    const X = this.floats(dtype, x, rows * cols), Y = this.floats(dtype, out, rows * cols);
    for (let r = 0; r < rows; r++) {
      let mx = -Infinity, sum = 0;
      for (let j = 0; j < cols; j++) mx = Math.max(mx, X.get(r * cols + j));
      for (let j = 0; j < cols; j++) sum += Math.exp(X.get(r * cols + j) - mx);
      for (let j = 0; j < cols; j++) {
        const z = X.get(r * cols + j) - mx;
        Y.set(r * cols + j, log ? z - Math.log(sum) : Math.exp(z) / sum);
      }
    }
  }

  geluGrad(dtype: number, g: bigint, x: bigint, out: bigint, n: number, tanh: boolean): void {
    const Gv = this.floats(dtype, g, n), X = this.floats(dtype, x, n), O = this.floats(dtype, out, n);
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < n; i++) {
      const v = X.get(i);
      let d: number;
      if (tanh) {
        const t = Math.tanh(c * (v + 0.044715 * v ** 3));
        d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * 0.044715 * v * v);
      } else d = 0.5 * (1 + erf(v / Math.SQRT2)) + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI);
      O.set(i, Gv.get(i) * d);
    }
  }

  /** Softmax rows of scale·q·kᵀ (+ bias) for (b, h), as probabilities with their log-sum-exp (the attention kernels' contract). */
  private attentionRows(q: Floats, k: Floats, s: AttnStrides, b: number, h: number, T: number, Tk: number, Dh: number, scale: number, causal: boolean, window: number, bias: AttnBias | null): { p: Float64Array[]; lse: number[] } {
    const p: Float64Array[] = [], lse: number[] = [];
    const kh = Math.floor(h / s.G);
    for (let i = 0; i < T; i++) {
      const n = causal ? i + 1 : Tk, j0 = window > 0 ? Math.max(0, i - window + 1) : 0;
      const sc = new Float64Array(Tk).fill(-Infinity);
      for (let j = j0; j < n; j++) {
        let dot = 0;
        for (let d = 0; d < Dh; d++) dot += q.get(b * s.sB + i * s.sT + h * Dh + d) * k.get(b * s.kB + j * s.kT + kh * Dh + d);
        sc[j] = scale * dot + (bias ? bias.v.get(b * bias.bB + h * bias.bH + i * Tk + j) : 0);
      }
      const mx = Math.max(...sc);
      const row = new Float64Array(Tk);
      // Every key masked (a bias of −∞): no weights and an lse of −∞, as the kernels give.
      if (mx === -Infinity) { p.push(row); lse.push(-Infinity); continue; }
      let sum = 0;
      for (let j = j0; j < n; j++) sum += Math.exp(sc[j]! - mx);
      for (let j = j0; j < n; j++) row[j] = Math.exp(sc[j]! - mx) / sum;
      p.push(row);
      lse.push(mx + Math.log(sum));
    }
    return { p, lse };
  }

  /** The native check_args refusals: a window without causal, key/value heads not dividing the query heads, causal cross-attention. */
  private checkAttention(causal: boolean, window: number, H: number, Hkv: number, T: number, Tk: number): void {
    if (window < 0 || (window > 0 && !causal)) throw new Error(`attention: a sliding window (${window} keys) needs a causal attention and a positive size`);
    if (H > 0 && (Hkv < 1 || H % Hkv)) throw new Error(`attention: ${Hkv} key/value heads do not divide ${H} query heads`);
    if (causal && T !== Tk) throw new Error(`attention: causal attention needs as many keys (${Tk}) as queries (${T})`);
  }

  private attnBias(dtype: number, bias: bigint, B: number, H: number, T: number, Tk: number, bB: number, bH: number): AttnBias | null {
    return bias ? { v: this.floats(dtype, bias, (B - 1) * bB + (H - 1) * bH + T * Tk), bB, bH } : null;
  }

  attentionForward(dtype: number, q: bigint, k: bigint, v: bigint, sB: number, sT: number, kB: number, kT: number, out: bigint, lse: bigint, B: number, T: number, H: number, Hkv: number, Dh: number, scale: number, causal: boolean, window: number,
    Tk: number, bias: bigint, bB: number, bH: number): void {
    this.checkAttention(causal, window, H, Hkv, T, Tk);
    const st: AttnStrides = { sB, sT, kB, kT, G: H / Hkv };
    const Q = this.floats(dtype, q, (B - 1) * sB + (T - 1) * sT + H * Dh), K = this.floats(dtype, k, (B - 1) * kB + (Tk - 1) * kT + Hkv * Dh), V = this.floats(dtype, v, (B - 1) * kB + (Tk - 1) * kT + Hkv * Dh);
    const O = this.floats(dtype, out, B * T * H * Dh), L = this.floats(0, lse, B * H * T);
    const bs = this.attnBias(dtype, bias, B, H, T, Tk, bB, bH);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      const { p, lse: l } = this.attentionRows(Q, K, st, b, h, T, Tk, Dh, scale, causal, window, bs);
      const kh = Math.floor(h / st.G);
      for (let i = 0; i < T; i++) {
        L.set((b * H + h) * T + i, l[i]!);
        for (let d = 0; d < Dh; d++) {
          let acc = 0;
          for (let j = 0; j < Tk; j++) acc += p[i]![j]! * V.get(b * kB + j * kT + kh * Dh + d);
          O.set(((b * T + i) * H + h) * Dh + d, acc);
        }
      }
    }
  }

  attentionBackward(dtype: number, q: bigint, k: bigint, v: bigint, sB: number, sT: number, kB: number, kT: number, out: bigint, dout: bigint, lse: bigint, dq: bigint, dk: bigint, dv: bigint,
    B: number, T: number, H: number, Hkv: number, Dh: number, scale: number, causal: boolean, window: number, Tk: number, bias: bigint, bB: number, bH: number, dscores: bigint): void {
    this.checkAttention(causal, window, H, Hkv, T, Tk);
    const st: AttnStrides = { sB, sT, kB, kT, G: H / Hkv };
    const n = B * T * H * Dh, nk = B * Tk * Hkv * Dh, kspan = (B - 1) * kB + (Tk - 1) * kT + Hkv * Dh;
    const Q = this.floats(dtype, q, (B - 1) * sB + (T - 1) * sT + H * Dh), K = this.floats(dtype, k, kspan), V = this.floats(dtype, v, kspan);
    const O = this.floats(dtype, out, n), G = this.floats(dtype, dout, n);
    const DQ = this.floats(dtype, dq, n), DK = this.floats(dtype, dk, nk), DV = this.floats(dtype, dv, nk);
    const bs = this.attnBias(dtype, bias, B, H, T, Tk, bB, bH);
    const DS = bs ? this.floats(dtype, dscores, B * H * T * Tk) : null;
    this.floats(0, lse, B * H * T);
    const at = (b: number, t: number, h: number, d: number) => ((b * T + t) * H + h) * Dh + d;
    // dK, dV of a shared head: the sum over its query heads, written once at the end.
    const gk = new Float64Array(nk), gv = new Float64Array(nk);
    const kat = (b: number, t: number, kh: number, d: number) => ((b * Tk + t) * Hkv + kh) * Dh + d;
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      const { p } = this.attentionRows(Q, K, st, b, h, T, Tk, Dh, scale, causal, window, bs);
      const kh = Math.floor(h / st.G);
      const gq = new Float64Array(T * Dh);
      for (let i = 0; i < T; i++) {
        // D_i = rowsum(dout ∘ out): the flash backward's per-row term.
        let Di = 0;
        for (let d = 0; d < Dh; d++) Di += G.get(at(b, i, h, d)) * O.get(at(b, i, h, d));
        for (let j = 0; j < Tk; j++) {
          const pij = p[i]![j]!;
          DS?.set(((b * H + h) * T + i) * Tk + j, 0);
          if (!pij) continue;
          let dp = 0;
          for (let d = 0; d < Dh; d++) {
            dp += G.get(at(b, i, h, d)) * V.get(b * kB + j * kT + kh * Dh + d);
            gv[kat(b, j, kh, d)]! += pij * G.get(at(b, i, h, d));
          }
          DS?.set(((b * H + h) * T + i) * Tk + j, pij * (dp - Di));
          const ds = pij * (dp - Di) * scale;
          for (let d = 0; d < Dh; d++) {
            gq[i * Dh + d]! += ds * K.get(b * kB + j * kT + kh * Dh + d);
            gk[kat(b, j, kh, d)]! += ds * Q.get(b * sB + i * sT + h * Dh + d);
          }
        }
      }
      for (let t = 0; t < T; t++) for (let d = 0; d < Dh; d++) DQ.set(at(b, t, h, d), gq[t * Dh + d]!);
    }
    for (let i = 0; i < nk; i++) {
      DK.set(i, gk[i]!);
      DV.set(i, gv[i]!);
    }
  }

  trilu(width: number, x: bigint, out: bigint, n: number, rows: number, cols: number, k: number, upper: boolean): void {
    const src = this.raw(width, x, n), dst = this.raw(width, out, n);
    for (let i = 0; i < n; i++) {
      const diff = (i % cols) - (Math.floor(i / cols) % rows);
      dst.set(i, (upper ? diff >= k : diff <= k) ? src.get(i) : width === 2 ? 0n : 0);
    }
  }

  dropout(dtype: number, x: bigint, y: bigint, mask: bigint, n: number, state: number, threshold: number, scale: number): void {
    const a = this.floats(dtype, x, n), o = this.floats(dtype, y, n), mk = mask ? this.u8(mask, n) : null;
    const s32 = Math.fround(scale);
    for (let i = 0; i < n; i++) {
      const draw = mulberry32((state + Math.imul(i + 1, 0x6d2b79f5)) >>> 0);
      const keep = draw >= threshold;
      o.set(i, keep ? a.get(i) * s32 : 0);
      if (mk) mk[i] = keep ? 1 : 0;
    }
  }

  bnStats(dtype: number, x: bigint, mean: bigint, variance: bigint, N: number, C: number, inner: number): void {
    const a = this.floats(dtype, x, N * C * inner), m = this.floats(0, mean, C), v = this.floats(0, variance, C);
    for (let c = 0; c < C; c++) {
      let s = 0;
      forChannel(N, C, inner, c, (i) => (s += a.get(i)));
      const mu = Math.fround(s / (N * inner));
      let q = 0;
      forChannel(N, C, inner, c, (i) => (q += (a.get(i) - mu) ** 2));
      m.set(c, mu);
      v.set(c, q / (N * inner));
    }
  }

  bnForward(dtype: number, x: bigint, scale: bigint, bias: bigint, mean: bigint, variance: bigint, y: bigint, N: number, C: number, inner: number, eps: number): void {
    const n = N * C * inner;
    const a = this.floats(dtype, x, n), sc = this.floats(dtype, scale, C), bi = this.floats(dtype, bias, C), m = this.floats(0, mean, C), v = this.floats(0, variance, C);
    const o = this.floats(dtype, y, n);
    for (let i = 0; i < n; i++) {
      const c = Math.floor(i / inner) % C;
      o.set(i, ((a.get(i) - m.get(c)) / Math.sqrt(v.get(c) + eps)) * sc.get(c) + bi.get(c));
    }
  }

  bnRunning(dtype: number, rm: bigint, rv: bigint, mean: bigint, variance: bigint, rmOut: bigint, rvOut: bigint, C: number, momentum: number): void {
    const m = this.floats(0, mean, C), v = this.floats(0, variance, C), a = this.floats(dtype, rm, C), b = this.floats(dtype, rv, C);
    const om = rmOut ? this.floats(dtype, rmOut, C) : null, ov = rvOut ? this.floats(dtype, rvOut, C) : null;
    for (let c = 0; c < C; c++) {
      om?.set(c, a.get(c) * momentum + m.get(c) * (1 - momentum));
      ov?.set(c, b.get(c) * momentum + v.get(c) * (1 - momentum));
    }
  }

  bnGradSums(dtype: number, g: bigint, x: bigint, mean: bigint, variance: bigint, sumG: bigint, sumGX: bigint, N: number, C: number, inner: number, eps: number): void {
    const n = N * C * inner;
    const gv = this.floats(dtype, g, n), a = this.floats(dtype, x, n), m = this.floats(0, mean, C), v = this.floats(0, variance, C);
    const sg = this.floats(0, sumG, C), sgx = this.floats(0, sumGX, C);
    for (let c = 0; c < C; c++) {
      const inv = 1 / Math.sqrt(v.get(c) + eps);
      let p = 0, q = 0;
      forChannel(N, C, inner, c, (i) => {
        p += gv.get(i);
        q += gv.get(i) * (a.get(i) - m.get(c)) * inv;
      });
      sg.set(c, p);
      sgx.set(c, q);
    }
  }

  bnGradInput(dtype: number, g: bigint, x: bigint, scale: bigint, mean: bigint, variance: bigint, sumG: bigint, sumGX: bigint, dx: bigint,
    N: number, C: number, inner: number, eps: number, training: boolean): void {
    const n = N * C * inner;
    const gv = this.floats(dtype, g, n), a = this.floats(dtype, x, n), sc = this.floats(dtype, scale, C), m = this.floats(0, mean, C), v = this.floats(0, variance, C);
    const sg = training ? this.floats(0, sumG, C) : null, sgx = training ? this.floats(0, sumGX, C) : null;
    const o = this.floats(dtype, dx, n);
    const count = N * inner;
    for (let i = 0; i < n; i++) {
      const c = Math.floor(i / inner) % C;
      const inv = 1 / Math.sqrt(v.get(c) + eps), gs = sc.get(c) * inv;
      if (training) {
        const xh = (a.get(i) - m.get(c)) * inv;
        o.set(i, gs * (gv.get(i) - sg!.get(c) / count - (xh * sgx!.get(c)) / count));
      } else o.set(i, gv.get(i) * gs);
    }
  }

  im2col(width: number, x: bigint, col: bigint, images: number, C: number, window: number[]): void {
    const w = win(window);
    const n = C * w.kSize * images * w.outSize;
    const src = this.raw(width, x, images * C * w.inSize), dst = this.raw(width, col, n);
    for (let i = 0; i < n; i++) {
      const o = i % w.outSize, rest = Math.floor(i / w.outSize), image = rest % images, row = Math.floor(rest / images);
      const c = Math.floor(row / w.kSize), tap = row % w.kSize;
      const oc = coords(o, w.out), qc = coords(tap, w.k);
      const p = [0, 1, 2].map((d) => tapInput(w, d, oc[d]!, qc[d]!));
      const inside = p.every((v, d) => v >= 0 && v < w.in[d]!);
      dst.set(i, inside ? src.get((image * C + c) * w.inSize + (p[0]! * w.in[1]! + p[1]!) * w.in[2]! + p[2]!) : width === 2 ? 0n : 0);
    }
  }

  col2im(dtype: number, col: bigint, dx: bigint, images: number, C: number, window: number[]): void {
    const w = win(window);
    const n = images * C * w.inSize, rowLen = images * w.outSize;
    const src = this.floats(dtype, col, C * w.kSize * rowLen), dst = this.floats(dtype, dx, n);
    for (let i = 0; i < n; i++) {
      const s = i % w.inSize, ic = Math.floor(i / w.inSize), c = ic % C, image = Math.floor(ic / C);
      const p = coords(s, w.in);
      let acc = 0;
      forTaps(w, p, (q, o) => {
        const tap = (q[0]! * w.k[1]! + q[1]!) * w.k[2]! + q[2]!;
        const op = (o[0]! * w.out[1]! + o[1]!) * w.out[2]! + o[2]!;
        acc += src.get((c * w.kSize + tap) * rowLen + image * w.outSize + op);
      });
      dst.set(i, acc);
    }
  }

  /** Each window's max, its global index and its position in the plane (max_pool_kernel). */
  private windowMax(dtype: number, x: bigint, planes: number, w: Win): { best: number[]; at: number[] } {
    const src = this.floats(dtype, x, planes * w.inSize);
    const best: number[] = [], at: number[] = [];
    for (let i = 0; i < planes * w.outSize; i++) {
      const o = i % w.outSize, plane = Math.floor(i / w.outSize);
      const oc = coords(o, w.out);
      let b = -Infinity, a = -1;
      forInputs(w, oc, (flat) => {
        const v = src.get(plane * w.inSize + flat);
        if (v > b) {
          b = v;
          a = flat;
        }
      });
      best.push(b);
      at.push(a);
    }
    return { best, at };
  }

  maxPool(dtype: number, x: bigint, y: bigint, indices: bigint, planes: number, window: number[]): void {
    const w = win(window);
    const { best, at } = this.windowMax(dtype, x, planes, w);
    const o = this.floats(dtype, y, best.length);
    best.forEach((v, i) => o.set(i, v));
    if (indices) {
      const b = this.bytes(indices, 8 * at.length);
      const ind = new BigInt64Array(b.buffer, b.byteOffset, at.length);
      at.forEach((a, i) => (ind[i] = BigInt(a < 0 ? -1 : Math.floor(i / w.outSize) * w.inSize + a)));
    }
  }

  maxPoolGrad(dtype: number, g: bigint, x: bigint, dx: bigint, planes: number, window: number[]): void {
    const w = win(window);
    const { at } = this.windowMax(dtype, x, planes, w);
    const gv = this.floats(dtype, g, planes * w.outSize), o = this.floats(dtype, dx, planes * w.inSize);
    for (let i = 0; i < planes * w.inSize; i++) {
      const s = i % w.inSize, plane = Math.floor(i / w.inSize);
      let acc = 0;
      forTaps(w, coords(s, w.in), (_, oc) => {
        const op = plane * w.outSize + (oc[0]! * w.out[1]! + oc[1]!) * w.out[2]! + oc[2]!;
        if (at[op] === s) acc += gv.get(op);
      });
      o.set(i, acc);
    }
  }

  avgPool(dtype: number, x: bigint, y: bigint, planes: number, window: number[], includePad: boolean): void {
    const w = win(window);
    const src = this.floats(dtype, x, planes * w.inSize), o = this.floats(dtype, y, planes * w.outSize);
    for (let i = 0; i < planes * w.outSize; i++) {
      const oc = coords(i % w.outSize, w.out), plane = Math.floor(i / w.outSize);
      let acc = 0;
      forInputs(w, oc, (flat) => (acc += src.get(plane * w.inSize + flat)));
      o.set(i, acc / avgDivisor(w, oc, includePad));
    }
  }

  avgPoolGrad(dtype: number, g: bigint, dx: bigint, planes: number, window: number[], includePad: boolean): void {
    const w = win(window);
    const gv = this.floats(dtype, g, planes * w.outSize), o = this.floats(dtype, dx, planes * w.inSize);
    for (let i = 0; i < planes * w.inSize; i++) {
      const s = i % w.inSize, plane = Math.floor(i / w.inSize);
      let acc = 0;
      forTaps(w, coords(s, w.in), (_, oc) => {
        acc += gv.get(plane * w.outSize + (oc[0]! * w.out[1]! + oc[1]!) * w.out[2]! + oc[2]!) / avgDivisor(w, oc, includePad);
      });
      o.set(i, acc);
    }
  }
}

function check(i: number, n: number): void {
  if (!(i >= 0 && i < n)) throw new Error(`element ${i} is outside the ${n} elements the kernel's operand spans`);
}

function at<T>(a: ArrayLike<T>, i: number, n: number): T {
  check(i, n);
  return a[i]!;
}

// CUDA's fminf/fmaxf: a NaN operand gives the other one.
const fminf = (p: number, q: number): number => (Number.isNaN(p) ? q : Number.isNaN(q) ? p : Math.min(p, q));
const fmaxf = (p: number, q: number): number => (Number.isNaN(p) ? q : Number.isNaN(q) ? p : Math.max(p, q));

function rowSoftmax(s: Floats, r: number, cols: number): { mx: number; sum: number } {
  let mx = -Infinity;
  for (let j = 0; j < cols; j++) mx = fmaxf(mx, s.get(r * cols + j));
  let sum = 0;
  for (let j = 0; j < cols; j++) sum += Math.exp(s.get(r * cols + j) - mx);
  return { mx, sum };
}

function forChannel(N: number, C: number, inner: number, c: number, f: (i: number) => void): void {
  for (let n = 0; n < N; n++) for (let q = 0; q < inner; q++) f((n * C + c) * inner + q);
}

/** kernels_extra.cu's mulberry32, in 32-bit integer steps. */
function mulberry32(t: number): number {
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

interface Win { in: number[]; k: number[]; out: number[]; stride: number[]; pad: number[]; dil: number[]; padEnd: number[]; inSize: number; kSize: number; outSize: number }

function win(w: readonly number[]): Win {
  if (w.length !== 21) throw new Error('a window takes 21 numbers');
  const f = (i: number): number[] => w.slice(3 * i, 3 * i + 3);
  const prod = (xs: number[]): number => xs[0]! * xs[1]! * xs[2]!;
  const v = { in: f(0), k: f(1), out: f(2), stride: f(3), pad: f(4), dil: f(5), padEnd: f(6) };
  return { ...v, inSize: prod(v.in), kSize: prod(v.k), outSize: prod(v.out) };
}

function coords(flat: number, size: readonly number[]): number[] {
  const c2 = flat % size[2]!;
  flat = Math.floor(flat / size[2]!);
  return [Math.floor(flat / size[1]!), flat % size[1]!, c2];
}

const tapInput = (w: Win, d: number, o: number, q: number): number => o * w.stride[d]! - w.pad[d]! + q * w.dil[d]!;

/** tap_output: the output coordinate from which tap q reads input coordinate p, or null. */
function tapOutput(w: Win, d: number, p: number, q: number): number | null {
  const t = p + w.pad[d]! - q * w.dil[d]!;
  if (t < 0 || t % w.stride[d]! !== 0) return null;
  const o = t / w.stride[d]!;
  return o < w.out[d]! ? o : null;
}

/** Every in-bounds input position (its index in the plane) that output position oc's window reads, in tap order (each_tap). */
function forInputs(w: Win, oc: readonly number[], f: (flat: number) => void): void {
  for (let q0 = 0; q0 < w.k[0]!; q0++) {
    const p0 = tapInput(w, 0, oc[0]!, q0);
    if (p0 < 0 || p0 >= w.in[0]!) continue;
    for (let q1 = 0; q1 < w.k[1]!; q1++) {
      const p1 = tapInput(w, 1, oc[1]!, q1);
      if (p1 < 0 || p1 >= w.in[1]!) continue;
      for (let q2 = 0; q2 < w.k[2]!; q2++) {
        const p2 = tapInput(w, 2, oc[2]!, q2);
        if (p2 < 0 || p2 >= w.in[2]!) continue;
        f((p0 * w.in[1]! + p1) * w.in[2]! + p2);
      }
    }
  }
}

/** Every (tap, output position) that reads input position p, taps in row-major order (the gather kernels' loops). */
function forTaps(w: Win, p: readonly number[], f: (q: number[], o: number[]) => void): void {
  for (let q0 = 0; q0 < w.k[0]!; q0++) {
    const o0 = tapOutput(w, 0, p[0]!, q0);
    if (o0 === null) continue;
    for (let q1 = 0; q1 < w.k[1]!; q1++) {
      const o1 = tapOutput(w, 1, p[1]!, q1);
      if (o1 === null) continue;
      for (let q2 = 0; q2 < w.k[2]!; q2++) {
        const o2 = tapOutput(w, 2, p[2]!, q2);
        if (o2 === null) continue;
        f([q0, q1, q2], [o0, o1, o2]);
      }
    }
  }
}

function insideTaps(w: Win, d: number, o: number): number {
  let n = 0;
  for (let q = 0; q < w.k[d]!; q++) {
    const p = tapInput(w, d, o, q);
    if (p >= 0 && p < w.in[d]!) n++;
  }
  return n;
}

function paddedTaps(w: Win, d: number, o: number): number {
  const start = o * w.stride[d]! - w.pad[d]!;
  const end = Math.min(start + (w.k[d]! - 1) * w.dil[d]! + 1, w.in[d]! + w.padEnd[d]!);
  const lo = Math.max(start, -w.pad[d]!);
  return end > lo ? Math.floor((end - lo + w.dil[d]! - 1) / w.dil[d]!) : 0;
}

function avgDivisor(w: Win, oc: readonly number[], includePad: boolean): number {
  let n = 1;
  for (let d = 0; d < 3; d++) n *= includePad ? paddedTaps(w, d, oc[d]!) : insideTaps(w, d, oc[d]!);
  return n;
}
