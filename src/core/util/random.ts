/** Seeded generator (mulberry32): fixtures and initial weights are the same on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /**
   * Moves on as `n` calls of next() would. Draw i after state s is a hash of s + i·0x6d2b79f5, so
   * a device kernel can make draws in parallel from the state and the host skips past them.
   */
  skip(n: number): void {
    this.s = (this.s + Math.imul(n, 0x6d2b79f5)) >>> 0;
  }
  /** The generator's whole state, for checkpoints: restoring it replays the same sequence. */
  get state(): number {
    return this.s;
  }
  set state(s: number) {
    this.s = s >>> 0;
  }
}
