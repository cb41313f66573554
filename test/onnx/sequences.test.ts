// SplitToSequence read back by SequenceAt (compiler/onnx/sequences.ts): imported as the Split it is,
// checked against onnxruntime-node running the same file; every other use of a sequence is refused
// naming the node.
import { describe, expect, it } from 'vitest';
import { importModel } from '../../compiler/onnx/import.js';
import type { NodeP, TensorP } from '../../src/core/onnx/proto.js';
import { tensorToProto } from '../../src/core/onnx/tensors.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { bytesOf, int64Init, intAttr, model, node, vi } from '../helpers/onnx.js';
import { maxRelError, runOrt } from '../helpers/ort.js';

const F = 1;
const scalar = (name: string, v: number): TensorP => tensorToProto(name, tensor('int64', [], [v]));
const X = tensor('float32', [2, 3, 6], Array.from({ length: 36 }, (_, i) => i / 7 - 2));

/** x [2, 3, 6] split on `axis` into a sequence, parts read at `positions`, each part through Relu. */
function splitModel(o: { split?: TensorP; axis?: number; keepdims?: number; positions: number[]; outShapes: number[][] }) {
  const attrs = [intAttr('axis', o.axis ?? 2), ...(o.keepdims !== undefined ? [intAttr('keepdims', o.keepdims)] : [])];
  const nodes: NodeP[] = [node('SplitToSequence', ['x', ...(o.split ? [o.split.name!] : [])], ['seq'], 'split', attrs)];
  const inits: TensorP[] = o.split ? [o.split] : [];
  o.positions.forEach((p, i) => {
    inits.push(scalar(`pos${i}`, p));
    nodes.push(node('SequenceAt', ['seq', `pos${i}`], [`part${i}`], `at${i}`), node('Relu', [`part${i}`], [`y${i}`], `relu${i}`));
  });
  return model({ nodes, inputs: [vi('x', F, [2, 3, 6])], outputs: o.outShapes.map((s, i) => vi(`y${i}`, F, s)), initializers: inits, opset: 18 });
}

async function sameAsOrt(m: ReturnType<typeof splitModel>): Promise<void> {
  const g = importModel(m, { baseDir: '.', file: 'seq.onnx' });
  expect(g.nodes.some((n) => n.op === 'Split')).toBe(true);
  const got = runGraph(g, { x: X });
  const want = await runOrt(bytesOf(m), { x: X });
  for (const [k, t] of Object.entries(want)) {
    expect(got.get(k)!.shape, k).toEqual(t.shape);
    expect(maxRelError(got.get(k)!, t), k).toBe(0);
  }
}

describe('SplitToSequence and SequenceAt', () => {
  it('a scalar split (parts of 2, as torch.split(x, 2) exports it), read at every position, one negative', async () => {
    await sameAsOrt(splitModel({ split: scalar('split', 2), positions: [0, 1, -1], outShapes: [[2, 3, 2], [2, 3, 2], [2, 3, 2]] }));
  });

  it('a scalar split that leaves a shorter last part, and a list of sizes', async () => {
    await sameAsOrt(splitModel({ split: scalar('split', 4), positions: [1, 0], outShapes: [[2, 3, 2], [2, 3, 4]] }));
    await sameAsOrt(splitModel({ split: int64Init('split', [1, 2, 3]), positions: [2, 0], outShapes: [[2, 3, 3], [2, 3, 1]] }));
  });

  it('no split: parts of one along the axis, squeezed where keepdims is 0', async () => {
    await sameAsOrt(splitModel({ axis: 1, keepdims: 0, positions: [0, 2], outShapes: [[2, 6], [2, 6]] }));
    await sameAsOrt(splitModel({ axis: -2, positions: [1], outShapes: [[2, 1, 6]] }));
  });

  it('refuses what is not a split read back part by part, naming the node', () => {
    const imp = (m: ReturnType<typeof splitModel>) => () => importModel(m, { baseDir: '.', file: 'seq.onnx' });
    expect(imp(splitModel({ split: scalar('split', 2), positions: [3], outShapes: [[2, 3, 2]] }))).toThrow(/seq\.onnx: node 'at0' \(SequenceAt\): position 3 is outside the sequence's 3 parts/);
    expect(imp(splitModel({ split: int64Init('split', [1, 2]), positions: [0], outShapes: [[2, 3, 1]] }))).toThrow(/node 'split' \(SplitToSequence\): split sizes \[1, 2\] must be whole numbers that sum to the axis size 6/);
    expect(imp(splitModel({ split: scalar('split', 0), positions: [0], outShapes: [[2, 3, 1]] }))).toThrow(/node 'split' \(SplitToSequence\): a split into parts of 0 elements/);
    expect(imp(splitModel({ axis: 3, positions: [0], outShapes: [[2, 3, 1]] }))).toThrow(/node 'split' \(SplitToSequence\): axis 3 is outside the 3 axes/);
    // A position computed at run time, and a sequence no split made.
    const dyn = model({
      nodes: [node('SplitToSequence', ['x'], ['seq'], 'split', [intAttr('axis', 2)]), node('SequenceAt', ['seq', 'p'], ['y'], 'at')],
      inputs: [vi('x', F, [2, 3, 6]), vi('p', 7, [])], outputs: [vi('y', F, [2, 3, 1])], opset: 18,
    });
    expect(() => importModel(dyn, { baseDir: '.', file: 'seq.onnx' })).toThrow(/node 'at' \(SequenceAt\): the position must be one constant integer/);
    const other = model({
      nodes: [node('SequenceAt', ['x', 'p0'], ['y'], 'at')],
      inputs: [vi('x', F, [2, 3, 6])], outputs: [vi('y', F, [2, 3, 6])], initializers: [scalar('p0', 0)], opset: 18,
    });
    expect(() => importModel(other, { baseDir: '.', file: 'seq.onnx' })).toThrow(/node 'at' \(SequenceAt\): reads the sequence 'x', which is not a SplitToSequence/);
  });
});
