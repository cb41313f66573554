// Attributes are checked at import by type and range from each op's registry entry, and plans' nodes
// by checkAttrs: each error is one line naming the file, the node, the attribute, what was expected
// and what was found.
import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { importModel } from '../../compiler/onnx/import.js';
import type { AttributeP, TensorP, ValueInfoP } from '../../src/core/onnx/proto.js';
import { ATTR } from '../../src/core/onnx/schema.js';
import { tensorToProto } from '../../src/core/onnx/tensors.js';
import { CleaveError } from '../../src/core/errors.js';
import type { AttrValue, Attrs } from '../../src/core/ir/graph.js';
import { tensor } from '../../src/core/ir/tensor.js';
import { type AttrSpec, type OpDef, allOps, checkAttrs, getOp, normalizeAttrs } from '../../src/core/ops/index.js';
import { attrsFromJson, attrsToJson } from '../../src/core/plan/attrs.js';
import { fixturePath } from '../helpers/fixtures.js';
import { floatAttr, floatInit, int64Init, intAttr, intsAttr, model, node, vi } from '../helpers/onnx.js';

const F = 1; // ONNX FLOAT
const I64 = 7;
const strAttr = (name: string, s: string): AttributeP => ({ name, type: ATTR.STRING, s: new TextEncoder().encode(s) });
const tensorAttr = (name: string, t: TensorP): AttributeP => ({ name, type: ATTR.TENSOR, t });

interface Case {
  op: string;
  attrs: AttributeP[];
  inputs: ValueInfoP[];
  /** Node input names: graph inputs and initializers. */
  reads: string[];
  initializers?: TensorP[];
  outputs?: number;
  opset?: number;
  message: RegExp;
}

const x4 = vi('x', F, [1, 1, 5, 5]);
const conv = (attrs: AttributeP[], message: RegExp): Case => ({ op: 'Conv', attrs, inputs: [x4], reads: ['x', 'w'], initializers: [floatInit('w', [1, 1, 3, 3])], message });
const pool = (op: string, attrs: AttributeP[], message: RegExp): Case => ({ op, attrs, inputs: [x4], reads: ['x'], message });
const unary = (op: string, attrs: AttributeP[], message: RegExp, shape: number[] = [2, 3], opset?: number): Case => ({ op, attrs, inputs: [vi('x', F, shape)], reads: ['x'], message, opset });
const withConst = (op: string, values: number[], message: RegExp, shape: number[] = [2, 3]): Case =>
  ({ op, attrs: [], inputs: [vi('x', F, shape)], reads: ['x', 'c'], initializers: [int64Init('c', values)], message });

/** `node 'n1' (Op): attribute 'k' must be …, got …` after the file. */
const msg = (op: string, rest: string): RegExp => new RegExp(`^a\\.onnx: node 'n1' \\(${op}\\): ${rest}$`);

const CASES: [string, Case][] = [
  ['Conv strides of 0', conv([intsAttr('strides', [1, 0])], msg('Conv', "attribute 'strides' must be positive integers, got \\[1, 0\\]"))],
  ['Conv strides given as one int', conv([intAttr('strides', 2)], msg('Conv', "attribute 'strides' must be positive integers, got 2"))],
  ['Conv dilations of 0', conv([intsAttr('dilations', [0, 1])], msg('Conv', "attribute 'dilations' must be positive integers, got \\[0, 1\\]"))],
  ['Conv negative pads', conv([intsAttr('pads', [0, -1, 0, 0])], msg('Conv', "attribute 'pads' must be non-negative integers, got \\[0, -1, 0, 0\\]"))],
  ['Conv group 0', conv([intAttr('group', 0)], msg('Conv', "attribute 'group' must be a positive integer, got 0"))],
  ['Conv kernel_shape of 0', conv([intsAttr('kernel_shape', [3, 0])], msg('Conv', "attribute 'kernel_shape' must be positive integers, got \\[3, 0\\]"))],
  ['Conv kernel_shape unlike the weight', conv([intsAttr('kernel_shape', [2, 2])], /a\.onnx: node 'n1': kernel_shape \[2, 2\] does not match the weight \[1, 1, 3, 3\]/)],
  ['Conv auto_pad unknown', conv([strAttr('auto_pad', 'SAME')], msg('Conv', "attribute 'auto_pad' must be one of 'NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID', got 'SAME'"))],
  ['Conv strides of the wrong count', conv([intsAttr('strides', [1, 1, 1])], /node 'n1': kernel \[3, 3\], strides and dilations must have 2 entries for 2 spatial dims/)],
  ['MaxPool without kernel_shape', pool('MaxPool', [], msg('MaxPool', "MaxPool needs the attribute 'kernel_shape'"))],
  ['MaxPool negative kernel', pool('MaxPool', [intsAttr('kernel_shape', [2, -2])], msg('MaxPool', "attribute 'kernel_shape' must be positive integers, got \\[2, -2\\]"))],
  ['MaxPool strides of 0', pool('MaxPool', [intsAttr('kernel_shape', [2, 2]), intsAttr('strides', [0, 0])], msg('MaxPool', "attribute 'strides' must be positive integers, got \\[0, 0\\]"))],
  ['MaxPool ceil_mode 2', pool('MaxPool', [intsAttr('kernel_shape', [2, 2]), intAttr('ceil_mode', 2)], msg('MaxPool', "attribute 'ceil_mode' must be 0 or 1, got 2"))],
  ['MaxPool storage_order a float', pool('MaxPool', [intsAttr('kernel_shape', [2, 2]), floatAttr('storage_order', 0.5)], msg('MaxPool', "attribute 'storage_order' must be 0 or 1, got 0\\.5"))],
  ['AveragePool count_include_pad 3', pool('AveragePool', [intsAttr('kernel_shape', [2, 2]), intAttr('count_include_pad', 3)], msg('AveragePool', "attribute 'count_include_pad' must be 0 or 1, got 3"))],
  ['AveragePool dilations of 0', pool('AveragePool', [intsAttr('kernel_shape', [2, 2]), intsAttr('dilations', [1, 0])], msg('AveragePool', "attribute 'dilations' must be positive integers, got \\[1, 0\\]"))],
  ['Transpose perm as an int', unary('Transpose', [intAttr('perm', 1)], msg('Transpose', "attribute 'perm' must be a list of integers, got 1"))],
  ['Transpose perm as a string', unary('Transpose', [strAttr('perm', '1,0')], msg('Transpose', "attribute 'perm' must be a list of integers, got '1,0'"))],
  ['Transpose perm repeating an axis', unary('Transpose', [intsAttr('perm', [0, 0])], /a\.onnx: node 'n1': perm \[0, 0\] is not a permutation of 2 axes/)],
  ['Transpose perm past the rank', unary('Transpose', [intsAttr('perm', [0, 2])], /node 'n1': perm \[0, 2\] is not a permutation of 2 axes/)],
  ['Split num_outputs 0', { ...unary('Split', [intAttr('axis', 1), intAttr('num_outputs', 0)], msg('Split', "attribute 'num_outputs' must be a positive integer, got 0"), [2, 6], 18), outputs: 2 }],
  ['Split num_outputs unlike its outputs', { ...unary('Split', [intAttr('axis', 1), intAttr('num_outputs', 3)], /node 'n1': num_outputs 3 does not match the node's 2 outputs/, [2, 6], 18), outputs: 2 }],
  ['Split negative sizes', { ...withConst('Split', [-1, 7], msg('Split', "input 'split' must be non-negative integers, got \\[-1, 7\\]"), [2, 6]), attrs: [intAttr('axis', 1)], outputs: 2 }],
  ['Gather axis a float', { op: 'Gather', attrs: [floatAttr('axis', 1.5)], inputs: [vi('x', F, [2, 3])], reads: ['x', 'i'], initializers: [int64Init('i', [0])], message: msg('Gather', "attribute 'axis' must be an integer, got 1\\.5") }],
  ['Gather axis past the rank', { op: 'Gather', attrs: [intAttr('axis', 2)], inputs: [vi('x', F, [2, 3])], reads: ['x', 'i'], initializers: [int64Init('i', [0])], message: /node 'n1': axis 2 is out of range for rank 2/ }],
  ['Concat axis a string', unary('Concat', [strAttr('axis', 'one')], msg('Concat', "attribute 'axis' must be an integer, got 'one'"))],
  ['Concat without axis', unary('Concat', [], msg('Concat', "Concat needs the attribute 'axis'"))],
  ['Softmax axis past the rank', unary('Softmax', [intAttr('axis', -3)], /node 'n1': axis -3 is out of range for rank 2/)],
  ['Cast to a string type', unary('Cast', [intAttr('to', 8)], msg('Cast', "attribute 'to' must be an element type code cleave supports \\(1 float32, .*\\), got 8"))],
  ['Cast to given by name', unary('Cast', [strAttr('to', 'float')], msg('Cast', "attribute 'to' must be an element type code cleave supports .*, got 'float'"))],
  ['Cast saturate 5', unary('Cast', [intAttr('to', 1), intAttr('saturate', 5)], msg('Cast', "attribute 'saturate' must be 0 or 1, got 5"))],
  ['Gemm transA 2', { op: 'Gemm', attrs: [intAttr('transA', 2)], inputs: [vi('x', F, [2, 3])], reads: ['x', 'w'], initializers: [floatInit('w', [3, 4])], message: msg('Gemm', "attribute 'transA' must be 0 or 1, got 2") }],
  ['Gemm transB -1', { op: 'Gemm', attrs: [intAttr('transB', -1)], inputs: [vi('x', F, [2, 3])], reads: ['x', 'w'], initializers: [floatInit('w', [3, 4])], message: msg('Gemm', "attribute 'transB' must be 0 or 1, got -1") }],
  ['Gemm alpha a string', { op: 'Gemm', attrs: [strAttr('alpha', 'two')], inputs: [vi('x', F, [2, 3])], reads: ['x', 'w'], initializers: [floatInit('w', [3, 4])], message: msg('Gemm', "attribute 'alpha' must be a number, got 'two'") }],
  ['Gelu approximate unknown', unary('Gelu', [strAttr('approximate', 'fast')], msg('Gelu', "attribute 'approximate' must be 'none' or 'tanh', got 'fast'"), [2, 3], 20)],
  ['LayerNormalization epsilon negative', { ...unary('LayerNormalization', [floatAttr('epsilon', -1)], msg('LayerNormalization', "attribute 'epsilon' must be a non-negative number, got -1")), reads: ['x', 's'], initializers: [floatInit('s', [3])] }],
  ['BatchNormalization training_mode 2', {
    op: 'BatchNormalization', attrs: [intAttr('training_mode', 2)], inputs: [vi('x', F, [2, 3])], reads: ['x', 's', 'b', 'm', 'v'],
    initializers: ['s', 'b', 'm', 'v'].map((n) => floatInit(n, [3])), message: msg('BatchNormalization', "attribute 'training_mode' must be 0 or 1, got 2"),
  }],
  ['ReduceMean keepdims 2', unary('ReduceMean', [intAttr('keepdims', 2)], msg('ReduceMean', "attribute 'keepdims' must be 0 or 1, got 2"))],
  ['ReduceSum axes as an int attribute', unary('ReduceSum', [intAttr('axes', 1)], msg('ReduceSum', "input 'axes' must be a list of integers, got 1"))],
  ['Trilu upper 2', unary('Trilu', [intAttr('upper', 2)], msg('Trilu', "attribute 'upper' must be 0 or 1, got 2"))],
  ['Relu with an attribute', unary('Relu', [floatAttr('alpha', 1)], msg('Relu', "Relu has no attribute 'alpha'"))],
  ['Reshape shape below -1', withConst('Reshape', [-2, 3], msg('Reshape', "input 'shape' must be integers ≥ -1, got \\[-2, 3\\]"))],
  ['Reshape allowzero 2', { ...withConst('Reshape', [3, 2], /never/), attrs: [intAttr('allowzero', 2)], message: msg('Reshape', "attribute 'allowzero' must be 0 or 1, got 2") }],
  ['Expand to a negative dim', withConst('Expand', [-1, 3], msg('Expand', "input 'shape' must be non-negative integers, got \\[-1, 3\\]"))],
  ['Expand without its shape', unary('Expand', [], /^a\.onnx: node 'n1': Expand needs a shape$/)],
  ['Tile without its repeats', unary('Tile', [], /^a\.onnx: node 'n1': Tile needs repeats$/)],
  ['Tile negative repeats', withConst('Tile', [-1, 1], msg('Tile', "input 'repeats' must be non-negative integers, got \\[-1, 1\\]"))],
  ['Slice step 0', {
    op: 'Slice', attrs: [], inputs: [vi('x', F, [4])], reads: ['x', 's', 'e', 'a', 'st'],
    initializers: [int64Init('s', [0]), int64Init('e', [4]), int64Init('a', [0]), int64Init('st', [0])], message: msg('Slice', "input 'steps' must be non-zero integers, got \\[0\\]"),
  }],
  ['Constant with two values', { op: 'Constant', attrs: [floatAttr('value_float', 1), intAttr('value_int', 1)], inputs: [], reads: [], message: /node 'n1': Constant has 2 value attributes \(value_float, value_int\); it takes exactly one/ }],
  ['Constant value given as ints', { op: 'Constant', attrs: [intsAttr('value', [1])], inputs: [], reads: [], message: msg('Constant', "attribute 'value' must be a tensor, got \\[1\\]") }],
  ['ConstantOfShape negative shape', { op: 'ConstantOfShape', attrs: [], inputs: [], reads: ['c'], initializers: [int64Init('c', [-3])], message: msg('ConstantOfShape', "input 'shape' must be non-negative integers, got \\[-3\\]") }],
  ['ConstantOfShape value of two elements', {
    op: 'ConstantOfShape', attrs: [tensorAttr('value', tensorToProto('', tensor('float32', [2], [1, 2])))], inputs: [], reads: ['c'], initializers: [int64Init('c', [3])],
    message: /node 'n1': ConstantOfShape value must have one element/,
  }],
  ['SoftmaxCrossEntropyLoss reduction unknown', {
    op: 'SoftmaxCrossEntropyLoss', attrs: [strAttr('reduction', 'avg')], inputs: [vi('x', F, [2, 3]), vi('l', I64, [2])], reads: ['x', 'l'],
    message: msg('SoftmaxCrossEntropyLoss', "attribute 'reduction' must be one of 'mean', 'sum', 'none', got 'avg'"),
  }],
  ['Attention is_causal 2', {
    op: 'Attention', attrs: [intAttr('is_causal', 2)], inputs: [vi('q', F, [1, 2, 4, 8]), vi('k', F, [1, 2, 4, 8]), vi('v', F, [1, 2, 4, 8])], reads: ['q', 'k', 'v'], opset: 23,
    message: msg('Attention', "attribute 'is_causal' must be 0 or 1, got 2"),
  }],
  ['Attention q_num_heads 0', {
    op: 'Attention', attrs: [intAttr('q_num_heads', 0), intAttr('kv_num_heads', 0)], inputs: [vi('q', F, [1, 4, 8]), vi('k', F, [1, 4, 8]), vi('v', F, [1, 4, 8])], reads: ['q', 'k', 'v'], opset: 23,
    message: msg('Attention', "attribute 'q_num_heads' must be a positive integer, got 0"),
  }],
  ['Range delta 0', {
    op: 'Range', attrs: [], inputs: [], reads: ['s', 'l', 'd'], message: /node 'n1': Range delta is 0/,
    initializers: [tensorToProto('s', tensor('int64', [], [0])), tensorToProto('l', tensor('int64', [], [4])), tensorToProto('d', tensor('int64', [], [0]))],
  }],
  ['Range to an infinite limit', {
    op: 'Range', attrs: [], inputs: [], reads: ['s', 'l', 'd'], message: /node 'n1': Range start 0, limit Infinity and delta 1 must be finite/,
    initializers: [tensorToProto('s', tensor('float32', [], [0])), tensorToProto('l', tensor('float32', [], [Infinity])), tensorToProto('d', tensor('float32', [], [1]))],
  }],
  ['Range of a vector start', {
    op: 'Range', attrs: [], inputs: [], reads: ['s', 'l', 'd'], message: /node 'n1': Range's start must be a scalar, got shape \[2\]/,
    initializers: [int64Init('s', [0, 1]), tensorToProto('l', tensor('int64', [], [4])), tensorToProto('d', tensor('int64', [], [1]))],
  }],
];

function oneNode(c: Case): Uint8Array | ReturnType<typeof model> {
  const outs = Array.from({ length: c.outputs ?? 1 }, (_, i) => `y${i}`);
  return model({
    nodes: [node(c.op, c.reads, outs, 'n1', c.attrs)],
    inputs: c.inputs, outputs: outs.map((o) => ({ name: o })), initializers: c.initializers ?? [], opset: c.opset ?? 17,
  });
}

describe('import refuses attributes of the wrong type or range, naming node, attribute, expectation and value', () => {
  it.each(CASES)('%s', (_, c) => {
    const m = oneNode(c) as ReturnType<typeof model>;
    let err: unknown;
    try {
      importModel(m, { baseDir: '.', file: 'a.onnx' }, {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CleaveError);
    expect((err as Error).message).toMatch(c.message);
    expect((err as Error).message).not.toMatch(/\n/);
  });
});

/** A value of the spec's type that its constraints allow. */
function validValue(spec: AttrSpec): AttrValue {
  const n = spec.oneOf?.find((v): v is number => typeof v === 'number') ?? Math.max(spec.min ?? 1, 1);
  switch (spec.type) {
    case 'int': return n;
    case 'dtype': return 1;
    case 'float': return Math.max(spec.min ?? 1, 1);
    case 'string': return (spec.oneOf?.[0] as string | undefined) ?? 'x';
    case 'ints': return [n];
    case 'floats': return [1];
    case 'strings': return ['x'];
    case 'tensor': return tensor('float32', [], [1]);
  }
}

/** Values of other ONNX types than the spec's. */
function wrongValues(spec: AttrSpec): AttrValue[] {
  const t = tensor('float32', [], [1]);
  switch (spec.type) {
    case 'int': case 'dtype': return ['1', [1], 1.5, t];
    case 'float': return ['1', [1], t];
    case 'string': return [1, ['a'], t];
    case 'ints': return [1, '1', [1.5], ['a'], t];
    case 'floats': return [1, '1', ['a'], t];
    case 'strings': return [1, 'a', [1], t];
    case 'tensor': return [1, 'a', [1]];
  }
}

/** Every attribute an op takes (its own and its lifted inputs'), with the spec checkAttrs applies. */
function specsOf(def: OpDef): [string, AttrSpec][] {
  const lifted = (def.lifted ?? []).map((l): [string, AttrSpec] => [l.attr, { ...l, type: l.type === 'bool' ? 'int' : l.type, optional: true }]);
  return [...Object.entries(def.attrs), ...lifted];
}

describe('every op entry declares checkable attributes', () => {
  const ops = allOps();

  it('covers the ops of every src/core/ops file', () => {
    for (const op of ['Conv', 'MaxPool', 'AveragePool', 'Transpose', 'Split', 'Gather', 'Concat', 'Softmax', 'Cast', 'Gemm', 'Slice', 'Range', 'FusedAttention', 'ConvGradInput', 'SliceGrad']) {
      expect(ops.map((d) => d.op)).toContain(op);
    }
  });

  it.each(ops.map((d) => [d.op, d] as const))('%s: its defaults pass its own checks, and required attributes are asked for', (_, def) => {
    const given: Attrs = {};
    for (const [k, spec] of Object.entries(def.attrs)) if (spec.default === undefined && !spec.optional) given[k] = validValue(spec);
    expect(() => normalizeAttrs(def, given, `node 'n' (${def.op})`)).not.toThrow();
    for (const k of Object.keys(given)) {
      const rest = { ...given };
      delete rest[k];
      expect(() => normalizeAttrs(def, rest, `node 'n' (${def.op})`)).toThrow(`node 'n' (${def.op}): ${def.op} needs the attribute '${k}'`);
    }
  });

  it.each(ops.map((d) => [d.op, d] as const))('%s: a value of another ONNX type is refused naming the attribute', (_, def) => {
    const base: Attrs = {};
    for (const [k, spec] of Object.entries(def.attrs)) if (spec.default === undefined && !spec.optional) base[k] = validValue(spec);
    for (const [k, spec] of specsOf(def)) {
      for (const bad of wrongValues(spec)) {
        const where = `node 'n' (${def.op})`;
        let err: unknown;
        try {
          normalizeAttrs(def, { ...base, [k]: bad }, where);
        } catch (e) {
          err = e;
        }
        expect(err, `${def.op}.${k} = ${JSON.stringify(bad)}`).toBeInstanceOf(CleaveError);
        expect((err as Error).message).toMatch(new RegExp(`^node 'n' \\(${def.op}\\): (attribute|input) '${k}' must be .+, got .+$|^node 'n' \\(${def.op}\\): .*${k}`));
      }
    }
  });

  it('window attributes of every convolution and pooling op, forward and gradient, refuse 0 and negatives', () => {
    for (const def of ops.filter((d) => d.category === 'conv' || d.category === 'pool')) {
      for (const k of ['strides', 'dilations', 'kernel_shape'] as const) {
        if (!def.attrs[k]) continue;
        expect(() => checkAttrs(def, { [k]: [1, 0] }, 'n'), `${def.op}.${k}`).toThrow(`n: attribute '${k}' must be positive integers, got [1, 0]`);
      }
      if (def.attrs['pads']) expect(() => checkAttrs(def, { pads: [0, -1] }, 'n')).toThrow("attribute 'pads' must be non-negative integers, got [0, -1]");
      if (def.attrs['group']) expect(() => checkAttrs(def, { group: 0 }, 'n')).toThrow("attribute 'group' must be a positive integer, got 0");
    }
  });
});

describe('checkAttrs on normalized attributes (plan nodes)', () => {
  it('accepts attributes read back from a plan\'s JSON, tensors included', () => {
    const cos = getOp('ConstantOfShape', 't');
    const attrs = attrsFromJson(attrsToJson(normalizeAttrs(cos, { shape: [2, 3], value: tensor('float32', [1], [7]) }, 't')));
    expect(() => checkAttrs(cos, attrs, "plan node 'c'")).not.toThrow();
    const convDef = getOp('Conv', 't');
    expect(() => checkAttrs(convDef, attrsFromJson(attrsToJson(normalizeAttrs(convDef, { strides: [2, 2] }, 't'))), "plan node 'c'")).not.toThrow();
  });

  it('refuses a tampered plan node naming where it is', () => {
    const convDef = getOp('Conv', 't');
    const json = attrsToJson(normalizeAttrs(convDef, { strides: [2, 2] }, 't')).replace('"strides":[2,2]', '"strides":[2,0]');
    expect(() => checkAttrs(convDef, attrsFromJson(json), "plan node '/stem/Conv' (Conv)")).toThrow("plan node '/stem/Conv' (Conv): attribute 'strides' must be positive integers, got [2, 0]");
    expect(() => checkAttrs(getOp('Cast', 't'), { to: 99 }, 'p')).toThrow(/^p: attribute 'to' must be an element type code cleave supports .*, got 99$/);
    expect(() => checkAttrs(getOp('Gemm', 't'), { transA: true as unknown as number }, 'p')).toThrow("p: attribute 'transA' must be 0 or 1, got boolean");
    expect(() => checkAttrs(getOp('Concat', 't'), {}, 'p')).toThrow("p: Concat needs the attribute 'axis'");
    expect(() => checkAttrs(getOp('Relu', 't'), { alpha: 1 }, 'p')).toThrow("p: Relu has no attribute 'alpha'");
    // A tensor whose data does not fill its shape is no tensor.
    const bad = { dtype: 'float32', shape: [4], data: new Float32Array(1) } as unknown as AttrValue;
    expect(() => checkAttrs(getOp('ConstantOfShape', 't'), { shape: [1], value: bad }, 'p')).toThrow("p: attribute 'value' must be a tensor, got an object that is not a tensor");
  });

  it('the cleave ops refuse what would make their kernels loop without end (heads 0, an epilogue unknown)', () => {
    expect(() => checkAttrs(getOp('FusedAttention', 't'), { heads: 0, causal: 0 }, 'p')).toThrow(/^p: heads 0 does not divide/);
    expect(() => checkAttrs(getOp('FusedAttentionGrad', 't'), { heads: 2, causal: 3 }, 'p')).toThrow('p: causal must be 0 or 1, got 3');
    expect(() => checkAttrs(getOp('FusedMatMul', 't'), { epilogue: 'relu' }, 'p')).toThrow("p: FusedMatMul epilogue 'relu' is not one of bias, gelu_bias, dgelu");
    expect(() => checkAttrs(getOp('SliceGrad', 't'), { starts: [0], ends: [1], steps: [0], shape: [2] }, 'p')).toThrow("p: attribute 'steps' must be non-zero integers, got [0]");
  });

  it('every node of the plans compile writes passes checkAttrs', () => {
    for (const [name, o] of [['gpt', { microbatches: 2, batch: 4 }], ['cnn', { microbatches: 2, batch: 4 }], ['torch_gpt', { microbatches: 1, batch: 2 }]] as const) {
      const plan = compile({ model: fixturePath(name), loss: 'auto', partitions: 2, schedule: 'zb-h1', ...o }).plan;
      expect(plan.nodes.length).toBeGreaterThan(10);
      for (const n of plan.nodes) expect(() => checkAttrs(getOp(n.op, n.name), attrsFromJson(n.attrs), `${name}: plan node '${n.name}' (${n.op})`)).not.toThrow();
    }
  });
});
