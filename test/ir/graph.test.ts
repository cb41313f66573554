import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import { Graph } from '../../src/core/ir/graph.js';
import { printGraph } from '../../src/core/ir/print.js';
import { broadcast } from '../../src/core/ir/shape.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';

function small(): { g: Graph; b: ModelBuilder } {
  const b = new ModelBuilder('small');
  const x = b.input('x', 'float32', ['N', 4]);
  const w = b.param('w', [4, 3], 'ones');
  const h = b.scope('layer', () => b.op('Relu', [b.op('MatMul', [x, w])]));
  b.output(h, 'y');
  return { g: b.finish(), b };
}

describe('Graph', () => {
  it('keeps use lists true and prints one line per node', () => {
    const { g } = small();
    const [mm, relu] = g.nodes;
    expect(mm!.outputs[0]!.users).toEqual([relu]);
    expect(g.values.get('w')!.users).toEqual([mm]);
    expect(printGraph(g)).toBe(
      [
        'graph small (opset 17)',
        '  input  %x : float32[N, 4]',
        '  param  %w : float32[4, 3]',
        '  %/layer/MatMul_output_0 = MatMul(%x, %w) : float32[N, 3]',
        '  %y = Relu(%/layer/MatMul_output_0) : float32[N, 3]',
        '  return %y',
        '',
      ].join('\n'),
    );
  });

  it('refuses to remove a node whose output is used, and removes dead code', () => {
    const { g } = small();
    expect(() => g.removeNode(g.nodes[0]!)).toThrow(/cannot remove node '\/layer\/MatMul': its output '\/layer\/MatMul_output_0' is used by \/layer\/Relu/);
    g.outputs.length = 0;
    g.addOutput(g.inputs[0]!);
    expect(g.removeDeadCode()).toBe(2);
    expect(g.values.has('w')).toBe(false);
    validateGraph(g);
  });

  it('replaceAllUses rewires nodes and outputs', () => {
    const { g } = small();
    const mmOut = g.nodes[0]!.outputs[0]!;
    const relu = g.nodes[1]!;
    g.replaceAllUses(relu.outputs[0]!, mmOut);
    expect(g.outputs[0]).toBe(mmOut);
    g.removeNode(relu);
    validateGraph(g);
  });

  it('rejects duplicate value names', () => {
    const g = new Graph();
    g.addInput('x', 'float32', [1]);
    expect(() => g.addParam('x', tensor('float32', [1]))).toThrow(/value 'x' is defined twice/);
  });
});

describe('validateGraph', () => {
  it('names the nodes of a cycle', () => {
    const b = new ModelBuilder('cyc');
    const x = b.input('x', 'float32', [2]);
    const a = b.op('Relu', [x]);
    const c = b.op('Neg', [a]);
    const d = b.op('Abs', [c]);
    b.output(d);
    const g = b.graph;
    g.nodes[0]!.setInput(0, d); // Relu now reads Abs's output: Relu → Neg → Abs → Relu
    expect(() => validateGraph(g)).toThrow(CleaveError);
    expect(() => validateGraph(g)).toThrow(/has a cycle: .*\/Relu.*\/Neg.*\/Abs|has a cycle: .*\/Abs.*\/Relu.*\/Neg|has a cycle: .*\/Neg.*\/Abs.*\/Relu/);
  });

  it('reports a node placed before its producer', () => {
    const { g } = small();
    g.nodes.reverse();
    expect(() => validateGraph(g)).toThrow(/node '\/layer\/Relu' comes before '\/layer\/MatMul'/);
  });

  it('reports inputs the graph does not define', () => {
    const { g } = small();
    const stranger = new Graph().addInput('ghost', 'float32', [4, 3]);
    g.nodes[0]!.setInput(1, stranger);
    expect(() => validateGraph(g)).toThrow(/node '\/layer\/MatMul' reads 'ghost', which the graph does not define/);
  });
});

describe('broadcast', () => {
  it('follows NumPy rules, with symbols', () => {
    expect(broadcast([[2, 1, 4], [3, 1]], 'n')).toEqual([2, 3, 4]);
    expect(broadcast([['N', 16, 32], [16, 32]], 'n')).toEqual(['N', 16, 32]);
    expect(broadcast([['N', 1], [1, 5]], 'n')).toEqual(['N', 5]);
    expect(() => broadcast([[2, 3], [4, 3]], "node 'add'")).toThrow(/node 'add': shapes \[2, 3\] and \[4, 3\] do not broadcast/);
  });
});

describe('foldConstants', () => {
  it('evaluates nodes on constants, so built graphs match imported ones', async () => {
    const { foldConstants } = await import('../../compiler/passes/fold.js');
    const { buildGpt, GPT_DEFAULT } = await import('../../fixtures/models.js');
    const g = buildGpt(GPT_DEFAULT);
    const before = g.nodes.length;
    expect(foldConstants(g)).toBe(2); // the causal mask's Trilu and Cast
    expect(g.nodes.length).toBe(before - 2);
    expect(g.nodes.some((n) => n.op === 'Trilu')).toBe(false);
    validateGraph(g);
  });
});
