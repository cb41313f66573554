import { describe, expect, it } from 'vitest';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { nn } from '../../src/app/api/index.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';

type SymTensor = nn.SymTensor;

/** Traces `f` on x = [[1, 2, 3], [4, 5, 6]] and returns its outputs, computed by the CPU reference backend. */
function run(f: (x: SymTensor) => Record<string, SymTensor>): Record<string, { shape: readonly number[]; values: number[] }> {
  class M extends nn.Module {
    forward(x: SymTensor): Record<string, SymTensor> { return f(x); }
  }
  const g = nn.trace(new M(), { x: { dtype: 'float32', shape: [2, 3] } });
  const out = runGraph(g, { x: tensor('float32', [2, 3], [1, 2, 3, 4, 5, 6]) });
  return Object.fromEntries([...out].map(([k, t]: [string, Tensor]) => [k, { shape: t.shape, values: [...t.data].map((v) => Math.round(v * 1e4) / 1e4) }]));
}

describe('symbolic tensor methods', () => {
  it('record the ops PyTorch\'s namesakes compute', () => {
    const r = run((x) => ({
      add: x.add(1), sub: x.sub(x), mul: x.mul(2), div: x.div(2), pow: x.pow(2), neg: x.neg(),
      mm: x.matmul(x.transpose(0, 1)), perm: x.permute(1, 0), reshape: x.reshape(3, -1), flat: x.unsqueeze(0).flatten(1),
      squeeze: x.unsqueeze(1).squeeze(1), slice: x.slice(1, 1, 3), mean: x.mean([1]), sum: x.sum([0], true),
      soft: x.softmax(-1), logsoft: x.logSoftmax(-1), relu: x.sub(3).relu(), cast: x.cast('int64'),
      split1: x.split([1, 2], 1)[1]!, where: nn.where(x.cast('bool'), x.neg(), 0), cat: nn.concat([x, x], 0),
      sig: x.sigmoid(), tanh: x.tanh(), gelu: x.gelu('tanh'), exp: x.exp(), log: x.log(), sqrt: x.sqrt(), abs: x.neg().abs(),
      gather: x.gather(nn.constant(tensor('int64', [1], [1]))), erf: x.erf(),
    }));
    const v = (k: string) => r[k]!.values;
    expect(v('add')).toEqual([2, 3, 4, 5, 6, 7]);
    expect(v('sub')).toEqual([0, 0, 0, 0, 0, 0]);
    expect(v('mul')).toEqual([2, 4, 6, 8, 10, 12]);
    expect(v('div')).toEqual([0.5, 1, 1.5, 2, 2.5, 3]);
    expect(v('pow')).toEqual([1, 4, 9, 16, 25, 36]);
    expect(v('neg')).toEqual([-1, -2, -3, -4, -5, -6]);
    expect(r['mm']).toEqual({ shape: [2, 2], values: [14, 32, 32, 77] });
    expect(r['perm']).toEqual({ shape: [3, 2], values: [1, 4, 2, 5, 3, 6] });
    expect(r['reshape']!.shape).toEqual([3, 2]);
    expect(r['flat']!.shape).toEqual([1, 6]);
    expect(r['squeeze']!.shape).toEqual([2, 3]);
    expect(r['slice']).toEqual({ shape: [2, 2], values: [2, 3, 5, 6] });
    expect(r['mean']).toEqual({ shape: [2], values: [2, 5] });
    expect(r['sum']).toEqual({ shape: [1, 3], values: [5, 7, 9] });
    const e = [Math.exp(-2), Math.exp(-1), 1];
    const z = e.reduce((a, b) => a + b);
    expect(v('soft').slice(0, 3)).toEqual(e.map((x) => Math.round((x / z) * 1e4) / 1e4));
    expect(v('logsoft').slice(0, 3)).toEqual(e.map((x) => Math.round(Math.log(x / z) * 1e4) / 1e4));
    expect(v('relu')).toEqual([0, 0, 0, 1, 2, 3]);
    expect(v('cast')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(r['split1']).toEqual({ shape: [2, 2], values: [2, 3, 5, 6] });
    expect(v('where')).toEqual([-1, -2, -3, -4, -5, -6]);
    expect(r['cat']!.shape).toEqual([4, 3]);
    expect(v('sig')[0]).toBeCloseTo(1 / (1 + Math.exp(-1)), 4);
    expect(v('tanh')[1]).toBeCloseTo(Math.tanh(2), 4);
    expect(v('gelu')[0]).toBeCloseTo(0.5 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (1 + 0.044715))), 4);
    expect(v('exp')[1]).toBeCloseTo(Math.exp(2), 3);
    expect(v('log')[2]).toBeCloseTo(Math.log(3), 4);
    expect(v('sqrt')[3]).toBe(2);
    expect(v('abs')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(r['gather']).toEqual({ shape: [1, 3], values: [4, 5, 6] });
    expect(v('erf')[0]).toBeCloseTo(0.8427, 4);
  });

  it('refuse a fractional scalar with an integer tensor', () => {
    class M extends nn.Module {
      forward(x: SymTensor): SymTensor { return x.cast('int64').add(0.5); }
    }
    expect(() => nn.trace(new M(), { x: { dtype: 'float32', shape: [2] } })).toThrow(/Add: 0\.5 is not an integer, and the tensor is int64/);
  });
});
