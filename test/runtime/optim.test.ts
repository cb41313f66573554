import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type OptimizerConfig, Optimizer, clipGradNorm, learningRate } from '../../runtime/optim/optimizer.js';
import { FIXTURES } from '../helpers/fixtures.js';

interface Reference {
  p0: number[];
  optimizers: Record<string, { kind: 'sgd' | 'adam' | 'adamw'; config: Record<string, number | boolean>; trajectory: number[][] }>;
  clip: { grads: number[][]; maxNorm: number; total: number; clipped: number[][] };
}
const ref = JSON.parse(readFileSync(join(FIXTURES, 'torch', 'optim_reference.json'), 'utf8')) as Reference;

describe.each(Object.entries(ref.optimizers))('%s', (_, r) => {
  it('follows torch.optim step for step', () => {
    const opt = new Optimizer({ kind: r.kind, ...r.config } as OptimizerConfig);
    const value = Float64Array.from(ref.p0);
    r.trajectory.forEach((expected, t) => {
      const grad = Float64Array.from(value, (w, i) => Math.sin(0.7 * i + 1.3 * t) + 0.1 * w);
      opt.step([{ name: 'p', value, grad }]);
      for (let i = 0; i < value.length; i++) expect(Math.abs(value[i]! - expected[i]!)).toBeLessThan(1e-12);
    });
  });
});

describe('clipGradNorm', () => {
  it('scales like torch.nn.utils.clip_grad_norm_', () => {
    const grads = ref.clip.grads.map((g) => Float64Array.from(g));
    expect(clipGradNorm(grads, ref.clip.maxNorm)).toBeCloseTo(ref.clip.total, 12);
    grads.forEach((g, k) => g.forEach((x, i) => expect(x).toBeCloseTo(ref.clip.clipped[k]![i]!, 12)));
  });

  it('leaves small gradients alone', () => {
    const g = Float32Array.from([0.3, 0.4]);
    expect(clipGradNorm([g], 1)).toBeCloseTo(0.5, 6);
    expect(Array.from(g)).toEqual([Math.fround(0.3), Math.fround(0.4)]);
  });
});

describe('learning-rate schedules', () => {
  it('warms up linearly, then decays by a cosine to the floor', () => {
    const s = { kind: 'cosine' as const, warmup: 10, total: 110, minLr: 0.1 };
    expect(learningRate(1, 0, s)).toBeCloseTo(0.1);
    expect(learningRate(1, 9, s)).toBeCloseTo(1);
    expect(learningRate(1, 10, s)).toBeCloseTo(1);
    expect(learningRate(1, 60, s)).toBeCloseTo(0.55);
    expect(learningRate(1, 110, s)).toBeCloseTo(0.1);
    expect(learningRate(1, 500, s)).toBeCloseTo(0.1);
    expect(learningRate(0.3, 1000, { kind: 'constant' })).toBe(0.3);
  });

  it('rejects impossible settings', () => {
    expect(() => new Optimizer({ kind: 'sgd', lr: 0.1, nesterov: true })).toThrow(/Nesterov momentum needs momentum > 0/);
    expect(() => new Optimizer({ kind: 'adam', lr: -1 })).toThrow(/learning rate must be ≥ 0/);
  });
});
