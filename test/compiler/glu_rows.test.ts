// GLU_RULES (compiler/passes/glu.ts): SwiGLU and GeGLU written out become one GatedUnit, with the
// written-out graph's numbers; look-alikes that broadcast or gate something else stay as written.
import { describe, expect, it } from 'vitest';
import { GELU_RULES } from '../../compiler/passes/gelu.js';
import { GLU_RULES } from '../../compiler/passes/glu.js';
import { applyRules } from '../../compiler/passes/rewrite.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

/** gate = x·Wg, up = x·Wu, then `mlp(gate, up)`, then ·Wd. */
function mlp(body: (b: ModelBuilder, gate: Value, up: Value) => Value): Graph {
  const b = new ModelBuilder('mlp', { seed: 3 });
  const x = b.input('x', 'float32', [2, 3, 4]);
  const gate = b.op('MatMul', [x, b.param('wg', [4, 8], { normal: 0.5 })]);
  const up = b.op('MatMul', [x, b.param('wu', [4, 8], { normal: 0.5 })]);
  b.output(b.op('MatMul', [body(b, gate, up), b.param('wd', [8, 4], { normal: 0.5 })]), 'y');
  return b.finish();
}

function fused(g: Graph, times: number, rules = GLU_RULES): Graph {
  const f = cloneGraph(g);
  applyRules(f, GELU_RULES);
  const n = [...applyRules(f, rules).values()].reduce((a, c) => a + c, 0);
  expect(n).toBe(times);
  validateGraph(f);
  const feeds = randomFeeds(g, 2, 7);
  expect(maxRelError(runGraph(f, feeds).get('y')!, runGraph(g, feeds).get('y')!)).toBeLessThanOrEqual(1e-6);
  return f;
}

describe('GLU_RULES', () => {
  const silu = (b: ModelBuilder, g: Value, swap: boolean) => b.op('Mul', swap ? [b.op('Sigmoid', [g]), g] : [g, b.op('Sigmoid', [g])]);
  it.each([[false, false], [true, false], [false, true], [true, true]])('SwiGLU (σ first %s, up first %s) is one GatedUnit silu', (swap, upFirst) => {
    const f = fused(mlp((b, g, u) => b.op('Mul', upFirst ? [u, silu(b, g, swap)] : [silu(b, g, swap), u])), 1);
    const n = f.nodes.find((x) => x.op === 'GatedUnit')!;
    expect(n.attrs['activation']).toBe('silu');
    expect(f.nodes.some((x) => x.op === 'Sigmoid')).toBe(false);
  });

  it.each([['tanh', 'gelu_tanh'], ['none', 'gelu']] as const)('GeGLU with a Gelu (%s) is one GatedUnit %s', (approximate, activation) => {
    const f = fused(mlp((b, g, u) => b.op('Mul', [b.op('Gelu', [g], { approximate }), u])), 1);
    expect(f.nodes.find((x) => x.op === 'GatedUnit')!.attrs['activation']).toBe(activation);
    expect(f.nodes.some((x) => x.op === 'Gelu')).toBe(false);
  });

  it('GeGLU whose GELU is written out (gelu_new): the GELU rows first, then the gate', () => {
    const f = fused(mlp((b, g, u) => {
      const inner = b.op('Mul', [b.op('Add', [g, b.op('Mul', [b.op('Pow', [g, b.scalar(3)]), b.scalar(0.044715)])]), b.scalar(Math.sqrt(2 / Math.PI))]);
      return b.op('Mul', [b.op('Mul', [b.op('Mul', [g, b.scalar(0.5)]), b.op('Add', [b.op('Tanh', [inner]), b.scalar(1)])]), u]);
    }), 1);
    expect(f.nodes.find((x) => x.op === 'GatedUnit')!.attrs['activation']).toBe('gelu_tanh');
  });

  it('stays as written: up broadcast over the gate, σ of another value, a silu read elsewhere', () => {
    fused(mlp((b, g) => b.op('Mul', [silu(b, g, false), b.param('ub', [8], { normal: 0.5 })])), 0);
    fused(mlp((b, g, u) => b.op('Mul', [b.op('Mul', [g, b.op('Sigmoid', [u])]), u])), 0);
    fused(mlp((b, g, u) => {
      const s = silu(b, g, false);
      b.output(s, 'silu');
      return b.op('Mul', [s, u]);
    }), 0);
  });
});
