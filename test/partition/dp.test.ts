import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { type SplitProblem, optimalSplit, stageCost, totals } from '../../compiler/partition/dp.js';
import { preparePartition } from '../../compiler/partition/partition.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import type { Value } from '../../src/core/ir/graph.js';
import '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';

/** Every split of N units into S non-empty contiguous stages. */
function* compositions(N: number, S: number, start = 0): Generator<number[]> {
  if (S === 1) {
    yield [start, N];
    return;
  }
  for (let end = start + 1; end <= N - (S - 1); end++) for (const rest of compositions(N, S - 1, end)) yield [start, ...rest];
}

function bruteForce(p: SplitProblem): number {
  const t = totals(p);
  let best = Infinity;
  for (const b of compositions(p.time.length, p.stages)) {
    let worst = 0, ok = true;
    for (let k = 0; k < p.stages; k++) {
      const c = stageCost(p, b[k]!, b[k + 1]!, k, t);
      if (!c.feasible) { ok = false; break; }
      worst = Math.max(worst, c.cost);
    }
    if (ok) best = Math.min(best, worst);
  }
  return best;
}

/** A random small model: a chain of layers with random skip connections, shared weights and widths. */
function randomGraph(rng: Rng): ReturnType<ModelBuilder['finish']> {
  const b = new ModelBuilder('rand', { seed: rng.int(1000) });
  const width = 4 + rng.int(5);
  let x: Value = b.input('x', 'float32', [2, width]);
  const earlier: Value[] = [x];
  const shared = b.param('shared', [width, width], { normal: 0.3 });
  const layers = 3 + rng.int(5);
  for (let l = 0; l < layers; l++) {
    x = b.scope(`l${l}`, () => {
      const kind = rng.int(4);
      let y: Value;
      if (kind === 0) y = b.op('MatMul', [x, rng.next() < 0.3 ? shared : b.param('w', [width, width], { normal: 0.3 })]);
      else if (kind === 1) y = b.op('Tanh', [x]);
      else if (kind === 2) y = b.op('Mul', [x, b.param('s', [width], { normal: 1 })]);
      else y = b.op('Relu', [b.op('MatMul', [x, b.param('w', [width, width], { normal: 0.3 })])]);
      // A skip connection from some earlier value: cuts across it carry both tensors.
      if (rng.next() < 0.4) y = b.op('Add', [y, earlier[rng.int(earlier.length)]!]);
      return y;
    });
    earlier.push(x);
  }
  b.output(b.op('ReduceMean', [b.op('Mul', [x, x])], { keepdims: 0 }), 'loss');
  return b.finish();
}

describe('optimal split', () => {
  it('equals brute force on small random problems (with memory limits and fixed stages)', () => {
    const rng = new Rng(42);
    for (let trial = 0; trial < 300; trial++) {
      const N = 2 + rng.int(9), S = 1 + rng.int(Math.min(4, N));
      const P = 1 + rng.int(5);
      const fixed = Array.from({ length: N }, () => -1);
      if (rng.next() < 0.3) fixed[rng.int(N)] = rng.int(S);
      const p: SplitProblem = {
        time: Array.from({ length: N }, () => rng.next() * 10),
        stash: Array.from({ length: N }, () => rng.next() * 100),
        temp: Array.from({ length: N }, () => rng.next() * 50),
        params: Array.from({ length: N }, () => Array.from({ length: rng.int(3) }, () => rng.int(P))),
        paramBytes: Array.from({ length: P }, () => rng.next() * 200),
        commTime: Array.from({ length: N + 1 }, (_, i) => (i === 0 || i === N ? 0 : rng.next() * 3)),
        inBytes: Array.from({ length: N + 1 }, (_, i) => (i === 0 || i === N ? 0 : rng.next() * 40)),
        stages: S,
        inFlight: (k) => S - k,
        capacity: rng.next() < 0.3 ? 300 + rng.next() * 400 : Infinity,
        memoryWeight: rng.next(),
        fixed,
      };
      const brute = bruteForce(p);
      const split = optimalSplit(p);
      if (brute === Infinity) expect(split, `trial ${trial}`).toBeNull();
      else {
        expect(split, `trial ${trial}`).not.toBeNull();
        expect(split!.bottleneck).toBeCloseTo(brute, 12);
        // The returned bounds achieve the optimum.
        const t = totals(p);
        const worst = Math.max(...Array.from({ length: S }, (_, k) => stageCost(p, split!.bounds[k]!, split!.bounds[k + 1]!, k, t).cost));
        expect(worst).toBeLessThanOrEqual(brute * (1 + 1e-9) + 1e-15);
      }
    }
  });

  it('equals brute force on the training graphs of small random models', () => {
    const rng = new Rng(7);
    let checked = 0;
    for (let trial = 0; trial < 25; trial++) {
      const g = randomGraph(rng);
      const t = buildTrainingGraph(g, { loss: { kind: 'output' } });
      for (const S of [1, 2, 3]) {
        const prep = preparePartition(t, { partitions: S, memoryWeight: rng.next(), device: 'cpu' });
        if (prep.units.units.length > 14) continue;
        const split = optimalSplit(prep.problem);
        expect(split!.bottleneck).toBeCloseTo(bruteForce(prep.problem), 12);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(30);
  });

  it('counts every tensor a cut across a skip connection carries', () => {
    const b = new ModelBuilder('skip');
    const x = b.input('x', 'float32', [4, 8]);
    const a = b.op('MatMul', [x, b.param('w0', [8, 8], 'ones')]);
    const c = b.op('Tanh', [a]);
    const d = b.op('Tanh', [c]);
    b.output(b.op('ReduceSum', [b.op('Add', [d, a])], { keepdims: 0 }), 'loss');
    const t = buildTrainingGraph(b.finish(), { loss: { kind: 'output' } });
    const prep = preparePartition(t, { partitions: 2 });
    const names = prep.units.units.map((u) => u.node.op);
    // Between the two Tanh nodes both the first Tanh's output and the MatMul's (skip) cross.
    const i = names.lastIndexOf('Tanh');
    expect(prep.units.crossing(i).map((v) => v.producer!.op).sort()).toEqual(['MatMul', 'Tanh']);
    expect(prep.units.cut[i]).toBe(2 * 4 * 8 * 4);
  });
});
