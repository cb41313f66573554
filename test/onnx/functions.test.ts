import { describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../src/core/onnx/codec.js';
import { exportModel } from '../../compiler/onnx/export.js';
import { importModel } from '../../compiler/onnx/import.js';
import type { FunctionP, ModelP } from '../../src/core/onnx/proto.js';
import { ATTR } from '../../src/core/onnx/schema.js';
import '../../src/core/ops/index.js';
import { tensor } from '../../src/core/ir/tensor.js';
import { bytesOf, floatInit, intAttr, model, node, vi } from '../helpers/onnx.js';
import { maxRelError, runOrt } from '../helpers/ort.js';

const F = 1;
const load = (m: ModelP) => importModel(decodeModel(bytesOf(m), 'm.onnx'), { baseDir: '.', file: 'm.onnx' });

/** custom:ScaledAct(x) = LeakyRelu(x · s) with `alpha` taken from the call's attribute. */
const scaledAct: FunctionP = {
  name: 'ScaledAct', domain: 'custom', input: ['x', 's'], output: ['y'], attribute: ['alpha'],
  opsetImport: [{ domain: '', version: 17 }],
  node: [
    node('Mul', ['x', 's'], ['t'], 'mul'),
    { ...node('LeakyRelu', ['t'], ['y'], 'act'), attribute: [{ name: 'alpha', refAttrName: 'alpha', type: ATTR.FLOAT }] },
  ],
};

/** custom:Twice(x) = ScaledAct(ScaledAct(x)): functions calling functions. */
const twice: FunctionP = {
  name: 'Twice', domain: 'custom', input: ['x', 's'], output: ['y'], opsetImport: [{ domain: '', version: 17 }, { domain: 'custom', version: 1 }],
  node: [
    { ...node('ScaledAct', ['x', 's'], ['h'], 'first', [], 'custom'), attribute: [{ name: 'alpha', type: ATTR.FLOAT, f: 0.5 }] },
    { ...node('ScaledAct', ['h', 's'], ['y'], 'second', [], 'custom'), attribute: [{ name: 'alpha', type: ATTR.FLOAT, f: 0.25 }] },
  ],
};

describe('model-local functions', () => {
  const m = model({
    nodes: [node('Twice', ['x', 'scale'], ['y'], 'call', [], 'custom')],
    inputs: [vi('x', F, [2, 3])], outputs: [vi('y', F, [2, 3])],
    initializers: [floatInit('scale', [3], (i) => (i + 1) * 0.7)],
    functions: [scaledAct, twice],
    extraOpsets: [{ domain: 'custom', version: 1 }],
  });

  it('are inlined at import, with attribute references resolved per call', () => {
    const g = load(m);
    expect(g.nodes.map((n) => `${n.name}:${n.op}`)).toEqual([
      'call/first/mul:Mul', 'call/first/act:LeakyRelu', 'call/second/mul:Mul', 'call/second/act:LeakyRelu',
    ]);
    expect(g.nodes[1]!.attrs['alpha']).toBe(0.5);
    expect(g.nodes[3]!.attrs['alpha']).toBe(0.25);
  });

  it('compute in the export what onnxruntime computes from the functions', async () => {
    const x = tensor('float32', [2, 3], [-3, -1, 0.5, 2, -0.25, 4]);
    const ref = await runOrt(bytesOf(m), { x });
    const ours = await runOrt(encodeModel(exportModel(load(m)).model), { x });
    expect(maxRelError(ours['y']!, ref['y']!)).toBeLessThan(1e-6);
  });

  it('that call themselves are rejected', () => {
    const loop: FunctionP = { name: 'Loop', domain: 'custom', input: ['x'], output: ['y'], node: [node('Loop', ['x'], ['y'], 'again', [], 'custom')] };
    const bad = model({ nodes: [node('Loop', ['x'], ['y'], 'call', [], 'custom')], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])], functions: [loop] });
    expect(() => load(bad)).toThrow(/function custom:Loop calls itself/);
  });
});

describe('partition annotations', () => {
  it('come from device_configurations pipeline_stage and metadata_props, and survive export', () => {
    const m = model({
      nodes: [
        { ...node('Relu', ['x'], ['a'], 'r0'), deviceConfigurations: [{ configurationId: 'pp', pipelineStage: 0 }] },
        { ...node('Relu', ['a'], ['b'], 'r1'), metadataProps: [{ key: 'partition', value: '1' }] },
        node('Relu', ['b'], ['y'], 'r2'),
      ],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])], irVersion: 10,
    });
    const g = load(m);
    expect(g.nodes.map((n) => n.meta.partition)).toEqual([0, 1, undefined]);
    const back = importModel(decodeModel(encodeModel(exportModel(g).model), 'b'), { baseDir: '.', file: 'b' });
    expect(back.nodes.map((n) => n.meta.partition)).toEqual([0, 1, undefined]);
  });

  it('must be non-negative integers', () => {
    const m = model({ nodes: [{ ...node('Relu', ['x'], ['y'], 'r'), metadataProps: [{ key: 'partition', value: 'first' }] }], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])] });
    expect(() => load(m)).toThrow(/node 'r' \(Relu\): partition 'first' is not a non-negative integer/);
  });
});

describe('opset forms', () => {
  it('reads ReduceMean axes as an attribute before opset 18 and as an input from 18, and writes each form back', async () => {
    const x = tensor('float32', [2, 3], [1, 2, 3, 4, 5, 6]);
    const attrForm = model({ nodes: [node('ReduceMean', ['x'], ['y'], 'rm', [{ name: 'axes', type: ATTR.INTS, ints: [1] }, intAttr('keepdims', 0)])], inputs: [vi('x', F, [2, 3])], outputs: [vi('y', F, [2])], opset: 17 });
    const inputForm = model({
      nodes: [node('ReduceMean', ['x', 'axes'], ['y'], 'rm', [intAttr('keepdims', 0)])],
      inputs: [vi('x', F, [2, 3])], outputs: [vi('y', F, [2])], opset: 18,
      initializers: [{ name: 'axes', dims: [1], dataType: 7, int64Data: [1] }],
    });
    for (const m of [attrForm, inputForm]) {
      const g = load(m);
      expect(g.nodes[0]!.attrs['axes']).toEqual([1]);
      const out = await runOrt(encodeModel(exportModel(g).model), { x });
      expect(Array.from(out['y']!.data)).toEqual([2, 5]);
    }
  });

  it('folds the shape arithmetic exporters emit, leaving static shapes', () => {
    // y = Reshape(x, Concat(Shape(x)[0:1], [-1])): the pattern of a flatten written with shapes.
    const m = model({
      nodes: [
        node('Shape', ['x'], ['s'], 'shape'),
        node('Gather', ['s', 'zero'], ['b'], 'g', [intAttr('axis', 0)]),
        node('Unsqueeze', ['b', 'zeroAxis'], ['b1'], 'u'),
        node('Concat', ['b1', 'minusOne'], ['target'], 'cat', [intAttr('axis', 0)]),
        node('Reshape', ['x', 'target'], ['y'], 'reshape'),
      ],
      inputs: [vi('x', F, [4, 2, 3])], outputs: [vi('y', F, [4, 6])],
      initializers: [
        { name: 'zero', dims: [], dataType: 7, int64Data: [0] },
        { name: 'zeroAxis', dims: [1], dataType: 7, int64Data: [0] },
        { name: 'minusOne', dims: [1], dataType: 7, int64Data: [-1] },
      ],
    });
    const g = load(m);
    expect(g.nodes.map((n) => n.op)).toEqual(['Reshape']);
    expect(g.nodes[0]!.attrs['shape']).toEqual([4, -1]);
    expect(g.outputs[0]!.shape).toEqual([4, 6]);
  });
});
