import { describe, expect, it } from 'vitest';
import { schedulePipeline } from '../../compiler/schedule/pipeline.js';
import type { ScheduleName } from '../../compiler/cost/memory.js';

const equal = (S: number, v: number, f = 1, b = 1, w = 1) => ({ f: Array(S).fill(f / v), b: Array(S).fill(b / v), w: Array(S).fill(w / v), comm: Array(S).fill(0) });

describe('predicted bubble fractions', () => {
  it.each([[2, 2], [2, 4], [2, 8], [4, 4], [4, 8], [4, 16], [8, 8]])('gpipe and 1f1b at p=%i, m=%i: (p−1)/(m+p−1)', (p, m) => {
    for (const schedule of ['gpipe', '1f1b'] as ScheduleName[]) {
      const r = schedulePipeline({ schedule, p, v: 1, m, times: equal(p, 1) });
      expect(Math.max(...r.bubble)).toBeCloseTo((p - 1) / (m + p - 1), 12);
      expect(r.makespan).toBeCloseTo((m + p - 1) * 3, 12);
    }
  });

  it.each([[2, 4, 2], [4, 8, 2], [4, 8, 4], [4, 16, 2]])('interleaved-1f1b at p=%i, m=%i, v=%i: (p−1)/(v·m+p−1), as Megatron-LM gives', (p, m, v) => {
    const r = schedulePipeline({ schedule: 'interleaved-1f1b', p, v, m, times: equal(p * v, v) });
    expect(Math.max(...r.bubble)).toBeCloseTo((p - 1) / (v * m + p - 1), 12);
  });

  it.each([[2, 4], [4, 4], [4, 8], [8, 16]])('zb-h1 at p=%i, m=%i: bubble time (p−1)(F+B−W), the zero-bubble paper\'s', (p, m) => {
    // With F = B = W the paper's ZB-H1 bubble is (p−1)(F+B−W), a third of 1F1B's (p−1)(F+B+W).
    const r = schedulePipeline({ schedule: 'zb-h1', p, v: 1, m, times: equal(p, 1) });
    expect(r.makespan).toBeCloseTo(3 * m + (p - 1), 12);
    expect(Math.max(...r.bubble)).toBeCloseTo((p - 1) / (3 * m + p - 1), 12);
    // With unequal costs it still beats 1F1B.
    const [f, b, w] = [1, 1.2, 0.8];
    const zb = schedulePipeline({ schedule: 'zb-h1', p, v: 1, m, times: equal(p, 1, f, b, w) });
    const oneF = schedulePipeline({ schedule: '1f1b', p, v: 1, m, times: equal(p, 1, f, b, w) });
    expect(zb.makespan).toBeLessThan(oneF.makespan);
  });

  it.each([[2, 4], [4, 8], [4, 16]])('zbv at p=%i, m=%i: smaller than every other schedule', (p, m) => {
    const zbv = schedulePipeline({ schedule: 'zbv', p, v: 2, m, times: equal(2 * p, 2) });
    const zbh1 = schedulePipeline({ schedule: 'zb-h1', p, v: 1, m, times: equal(p, 1) });
    const inter = schedulePipeline({ schedule: 'interleaved-1f1b', p, v: 2, m, times: equal(2 * p, 2) });
    expect(Math.max(...zbv.bubble)).toBeLessThan(Math.max(...zbh1.bubble));
    expect(Math.max(...zbv.bubble)).toBeLessThan(Math.max(...inter.bubble));
  });

  it('caps the microbatches in flight with active_microbatches', () => {
    const r = schedulePipeline({ schedule: '1f1b', p: 4, v: 1, m: 8, active: 2, times: equal(4, 1) });
    const inflight = r.ranks[0]!.reduce((st, w) => {
      st.cur += w.kind === 'F' ? 1 : w.kind === 'BW' ? -1 : 0;
      st.max = Math.max(st.max, st.cur);
      return st;
    }, { cur: 0, max: 0 });
    expect(inflight.max).toBe(2);
  });

  it.each([['zb-h1', 1], ['zbv', 2]] as const)('%s with active_microbatches past p: more forwards ahead and deferred W (a shorter step), never more in flight per stage than set', (schedule, v) => {
    const p = 4, m = 8, times = equal(p * v, v, 1, 1.2, 0.8);
    const base = schedulePipeline({ schedule, p, v, m, times });
    const roomy = schedulePipeline({ schedule, p, v, m, active: 8, times });
    expect(roomy.makespan).toBeLessThan(base.makespan * 0.99);
    for (const [spec, cap] of [[base, p], [roomy, 8]] as const) {
      for (const list of spec.ranks) {
        const live = new Map<number, number>();
        for (const w of list) {
          live.set(w.stage, (live.get(w.stage) ?? 0) + (w.kind === 'F' ? 1 : w.kind === 'B' ? -1 : 0));
          expect(live.get(w.stage)!).toBeLessThanOrEqual(cap);
        }
      }
    }
  });

  it('rejects impossible combinations', () => {
    const t = equal(4, 1);
    expect(() => schedulePipeline({ schedule: 'interleaved-1f1b', p: 4, v: 1, m: 8, times: t })).toThrow(/interleaved-1f1b needs --virtual-stages ≥ 2/);
    expect(() => schedulePipeline({ schedule: 'interleaved-1f1b', p: 4, v: 2, m: 6, times: equal(8, 2) })).toThrow(/6 microbatches is not a multiple of 4/);
    expect(() => schedulePipeline({ schedule: 'zbv', p: 4, v: 1, m: 8, times: t })).toThrow(/zbv places two stages on each rank/);
    expect(() => schedulePipeline({ schedule: '1f1b', p: 2, v: 2, m: 8, times: equal(4, 2) })).toThrow(/1f1b runs one stage per rank/);
  });
});
