// A small seeded generator (mulberry32): every campaign is reproducible from its seed, and each
// mutation draws from its own stream (seed, campaign, index), so one case can be re-made alone
// without replaying the cases before it.

export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** A generator for one case: the same (seed, salt, index) always gives the same stream. */
  static forCase(seed: number, salt: string, index: number): Rng {
    let h = (seed ^ 0x9e3779b9) >>> 0;
    for (const c of `${salt}#${index}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
    return new Rng(h);
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    if (!xs.length) throw new Error('pick from an empty list');
    return xs[this.int(xs.length)]!;
  }
  /** One of the weighted choices ([weight, value] pairs). */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    const total = choices.reduce((a, [w]) => a + w, 0);
    let r = this.next() * total;
    for (const [w, v] of choices) if ((r -= w) < 0) return v;
    return choices[choices.length - 1]![1];
  }
}

/** Values that break code written for the usual ones: zero, negatives, the edges of int32 and of safe integers. */
export const EDGE_INTS: readonly number[] = [0, -1, 1, 2, -2, 3, 7, 255, 65536, 2 ** 31 - 1, -(2 ** 31), 2 ** 32, 2 ** 40, 2 ** 53 - 1, -(2 ** 53 - 1), 1e15];
export const EDGE_FLOATS: readonly number[] = [0, -0, -1, 1e-45, 1e38, -1e38, 3.4e38, Infinity, -Infinity, NaN, 0.5, 1e-8, 1e8];
