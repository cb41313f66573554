import { CleaveError } from '../../../src/core/errors.js';

/** Every block starts on 256 bytes: what cuBLASLt and the 16-byte vector kernels like best. */
const ALIGN = 256;

/**
 * A first-fit allocator of offsets in one block of `capacity` bytes (Infinity: sizing only, which
 * records the high-water mark). Deterministic: the same sequence of allocs and frees gives the same
 * offsets, so a step's tensors land at the same addresses every step, which is what lets a
 * recorded launch list (a captured CUDA graph per instruction) be replayed.
 */
export class Arena {
  /** Free ranges, sorted by offset, never adjacent (they merge). */
  private readonly holes: { at: number; bytes: number }[];
  private readonly sizes = new Map<number, number>();
  /** The end of the highest block ever handed out. */
  high = 0;

  constructor(readonly capacity = Infinity) {
    this.holes = [{ at: 0, bytes: capacity }];
  }

  alloc(bytes: number): number {
    const n = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    const i = this.holes.findIndex((h) => h.bytes >= n);
    if (i < 0) throw new CleaveError(`the step arena (${this.capacity} bytes) has no room for ${bytes} bytes: the step allocates more than the step it was sized by`);
    const h = this.holes[i]!;
    const at = h.at;
    if (h.bytes === n) this.holes.splice(i, 1);
    else this.holes[i] = { at: at + n, bytes: h.bytes - n };
    this.sizes.set(at, n);
    this.high = Math.max(this.high, at + n);
    return at;
  }

  free(at: number): void {
    const n = this.sizes.get(at);
    if (n === undefined) throw new CleaveError(`arena offset ${at} is not an allocated block`);
    this.sizes.delete(at);
    let i = this.holes.findIndex((h) => h.at > at);
    if (i < 0) i = this.holes.length;
    this.holes.splice(i, 0, { at, bytes: n });
    // Merge with the following hole, then with the preceding one.
    const next = this.holes[i + 1];
    if (next && at + n === next.at) {
      this.holes[i]!.bytes += next.bytes;
      this.holes.splice(i + 1, 1);
    }
    const prev = this.holes[i - 1];
    if (prev && prev.at + prev.bytes === at) {
      prev.bytes += this.holes[i]!.bytes;
      this.holes.splice(i, 1);
    }
  }

  /** Blocks handed out and not freed. */
  get live(): number {
    return this.sizes.size;
  }

  /** Everything free again (a new step). */
  reset(): void {
    this.sizes.clear();
    this.holes.splice(0, this.holes.length, { at: 0, bytes: this.capacity });
  }
}
