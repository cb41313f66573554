// Import never materializes a constant past its bound before knowing it is needed: oversized folds
// are refused naming node, shape and bound (dead ones are left out), initializers whose dims claim
// more than their bytes are refused before anything is allocated, and no shape reaches the costs or
// the allocator that no tensor can have.
import { describe, expect, it } from 'vitest';
import { foldConstants } from '../../compiler/passes/fold.js';
import { encodeModel } from '../../src/core/onnx/codec.js';
import { importModel } from '../../compiler/onnx/import.js';
import type { ModelP, TensorP } from '../../src/core/onnx/proto.js';
import { tensorToProto } from '../../src/core/onnx/tensors.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { MAX_FOLD_BYTES, materialize } from '../../src/core/ir/materialize.js';
import { MAX_HOST_ELEMENTS, tensor, tensorFromBytes } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { floatInit, int64Init, intsAttr, model, node, vi } from '../helpers/onnx.js';

const F = 1; // ONNX FLOAT
const load = (m: ModelP): Graph => importModel(m, { baseDir: '.', file: 'b.onnx' }, {});

function refused(f: () => unknown, re: RegExp): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CleaveError);
    expect((e as Error).message).toMatch(re);
    expect((e as Error).message).not.toMatch(/\n|Invalid typed array length|RangeError/);
    return (e as Error).message;
  }
  throw new Error(`expected a CleaveError matching ${re}, but it succeeded`);
}

/** Memory in use now, to show a refused fold allocated nothing of its size. */
const heapMiB = (): number => process.memoryUsage().arrayBuffers / 2 ** 20;

/** y = x + ConstantOfShape(shape) (or only the constant, dead, beside y = Relu(x)). */
function constantOfShape(shape: number[], used = true): ModelP {
  return model({
    nodes: [
      node('ConstantOfShape', ['shape'], ['big'], 'huge'),
      used ? node('Add', ['x', 'big'], ['y'], 'add') : node('Relu', ['x'], ['y'], 'relu'),
    ],
    inputs: [vi('x', F, [1])], outputs: [vi('y', F, used ? shape : [1])],
    initializers: [int64Init('shape', shape)],
  });
}

describe('constants folded at import', () => {
  it('the bound is 1 GiB of host memory', () => expect(MAX_FOLD_BYTES).toBe(2 ** 30));

  it('an 11 KB file with ConstantOfShape of a huge shape is refused naming node, shape and bound, allocating nothing', () => {
    const m = constantOfShape([65536, 65536]);
    expect(encodeModel(m).byteLength).toBeLessThan(11_000);
    const before = heapMiB();
    refused(() => load(m), /^b\.onnx: node 'huge' \(ConstantOfShape\): output 'big' is a constant float32\[65536, 65536\] of 16\.0 GiB, past the 1 GiB bound on constants folded at compile time$/);
    expect(heapMiB() - before).toBeLessThan(64);
  });

  it('a shape whose element count is no safe integer is refused before any fold', () => {
    refused(() => load(constantOfShape([2 ** 40, 2 ** 40])), /node 'huge' \(ConstantOfShape\): output 'big' would have the shape \[1099511627776, 1099511627776\], which no tensor can have/);
  });

  it('just under the bound folds; just over is refused', () => {
    // 2^28 float32 = 1 GiB exactly: allowed. One more row is past it (not allocated).
    refused(() => load(constantOfShape([2 ** 28 + 1])), /output 'big' is a constant float32\[268435457\] of 1\.0 GiB, past the 1 GiB bound/);
    const g = load(model({
      nodes: [node('ConstantOfShape', ['shape'], ['c'], 'small'), node('Add', ['x', 'c'], ['y'], 'add')],
      inputs: [vi('x', F, [1])], outputs: [vi('y', F, [1024])], initializers: [int64Init('shape', [1024])],
    }));
    expect(g.constants().some((v) => v.shape[0] === 1024)).toBe(true);
  });

  it('an oversized constant no output needs is left out, and what reads it too', () => {
    const m = model({
      nodes: [
        node('ConstantOfShape', ['shape'], ['big'], 'huge'),
        node('Neg', ['big'], ['big2'], 'dead_reader'),
        node('Relu', ['x'], ['y'], 'relu'),
      ],
      inputs: [vi('x', F, [4])], outputs: [vi('y', F, [4])], initializers: [int64Init('shape', [65536, 65536])],
    });
    const g = load(m);
    expect(g.nodes.map((n) => n.name)).toEqual(['relu']);
    expect(load(constantOfShape([65536, 65536], false)).nodes.map((n) => n.op)).toEqual(['Relu']);
  });

  it('Expand, Tile and Range of constants past the bound are refused naming the node', () => {
    const expand = model({
      nodes: [node('Expand', ['one', 'shape'], ['big'], 'expand'), node('Add', ['x', 'big'], ['y'], 'add')],
      inputs: [vi('x', F, [1])], outputs: [{ name: 'y' }],
      initializers: [tensorToProto('one', tensor('int64', [1], [1])), int64Init('shape', [1 << 20, 1 << 10])],
    });
    refused(() => load(expand), /node 'expand' \(Expand\): output 'big' is a constant int64\[1048576, 1024\] of 8\.0 GiB, past the 1 GiB bound/);
    const tile = model({
      nodes: [node('Tile', ['c', 'reps'], ['big'], 'tile'), node('Add', ['x', 'big'], ['y'], 'add')],
      inputs: [vi('x', 7, [1])], outputs: [{ name: 'y' }],
      initializers: [tensorToProto('c', tensor('int64', [2, 2], [1, 2, 3, 4])), int64Init('reps', [1 << 16, 1 << 14])],
    });
    refused(() => load(tile), /node 'tile' \(Tile\): output 'big' is a constant int64\[131072, 32768\] of 32\.0 GiB/);
    const range = (limit: number): ModelP => model({
      nodes: [node('Range', ['s', 'l', 'd'], ['r'], 'range'), node('Add', ['x', 'r'], ['y'], 'add')],
      inputs: [vi('x', 7, [1])], outputs: [{ name: 'y' }],
      initializers: [tensorToProto('s', tensor('int64', [], [0])), tensorToProto('l', tensor('int64', [], [limit])), tensorToProto('d', tensor('int64', [], [1]))],
    });
    refused(() => load(range(2 ** 40)), /node 'range' \(Range\): output 'r' is a constant int64\[1099511627776\] of 8192\.0 GiB, past the 1 GiB bound/);
    refused(() => load(range(2 ** 62)), /^b\.onnx: node 'range': Range from 0 to \d+ by 1 has \d+ elements, more than a tensor can hold$/);
  });

  it('a Conv whose pads would make an output no tensor can have is refused naming the output', () => {
    const m = model({
      nodes: [node('Conv', ['x', 'w'], ['y'], 'conv', [intsAttr('pads', [0, 2 ** 52, 0, 2 ** 52])])],
      inputs: [vi('x', F, [1, 1, 4, 4])], outputs: [{ name: 'y' }], initializers: [floatInit('w', [1, 1, 3, 3])],
    });
    refused(() => load(m), /node 'conv' \(Conv\): output 'y' would have the shape \[1, 1, 2, \d+\], which no tensor can have/);
  });

  it('foldConstants leaves a node past the bound for run time, and folds the rest', () => {
    const b = new ModelBuilder('fold');
    const x = b.input('x', 'float32', [4]);
    const big = b.op('ConstantOfShape', [], { shape: [2 ** 29] });
    const small = b.op('ConstantOfShape', [], { shape: [4] });
    b.output(b.op('Add', [x, small]), 'y');
    b.output(big, 'z');
    const g = b.finish();
    expect(foldConstants(g)).toBe(1);
    expect(g.nodes.map((n) => n.op).sort()).toEqual(['Add', 'ConstantOfShape']);
    expect(g.nodes.find((n) => n.op === 'ConstantOfShape')!.outputs[0]!.shape).toEqual([2 ** 29]);
  });
});

describe('initializers and tensors', () => {
  const withInit = (t: TensorP): ModelP => model({
    nodes: [node('Add', ['x', t.name!], ['y'], 'add')], inputs: [vi('x', F, [1])], outputs: [{ name: 'y' }], initializers: [t],
  });

  it('dims that claim more elements than the raw bytes hold are refused before allocating', () => {
    const before = heapMiB();
    refused(() => load(withInit({ name: 'w', dims: [1 << 28], dataType: F, rawData: new Uint8Array(4) })),
      /^b\.onnx: initializer 'w': float32 tensor of shape \[268435456\] needs 1073741824 bytes of data, found 4$/);
    expect(heapMiB() - before).toBeLessThan(64);
  });

  it('dims that claim more elements than the typed fields hold are refused before allocating', () => {
    refused(() => load(withInit({ name: 'w', dims: [1 << 28], dataType: F, floatData: [1] })),
      /initializer 'w': float32 tensor of shape \[268435456\] needs 268435456 values, found 1/);
  });

  it('dims past what a host tensor holds are refused, whatever the data', () => {
    refused(() => load(withInit({ name: 'w', dims: [1 << 20, 1 << 20], dataType: F, rawData: new Uint8Array(4) })),
      /initializer 'w': a float32 tensor of shape \[1048576, 1048576\] has 1099511627776 elements, more than a host tensor holds \(2\^32\)/);
    refused(() => load(withInit({ name: 'w', dims: [2 ** 60], dataType: F, rawData: new Uint8Array(4) })), /initializer 'w': has invalid dims \[1152921504606847000\] \(dims must be non-negative integers\)/);
  });

  it('an initializer of zero elements with no data is fine', () => {
    const g = load(model({
      nodes: [node('Concat', ['x', 'e'], ['y'], 'cat', [{ name: 'axis', type: 2, i: 0 }])],
      inputs: [vi('x', F, [2])], outputs: [{ name: 'y' }], initializers: [{ name: 'e', dims: [0], dataType: F }],
    }));
    expect(g.outputs[0]!.shape).toEqual([2]);
  });

  it('tensor() refuses shapes no host array holds with a CleaveError, not a RangeError', () => {
    expect(MAX_HOST_ELEMENTS).toBe(2 ** 32);
    refused(() => tensor('float32', [2 ** 33]), /a float32 tensor of shape \[8589934592\] has 8589934592 elements, more than a host tensor holds \(2\^32\)/);
    refused(() => tensor('float32', [-2, -3]), /a tensor cannot have the shape \[-2, -3\] \(dims must be non-negative integers\)/);
    refused(() => tensor('int64', [1.5, 2]), /a tensor cannot have the shape \[1\.5, 2\]/);
    refused(() => tensorFromBytes('float32', [-1], new Uint8Array(0), 'raw'), /raw: float32 tensor of shape \[-1\] needs -4 bytes of data, found 0/);
  });

  it('an empty tensor whose other dims span past the host limit is refused (kernels would walk its empty rows)', () => {
    refused(() => tensor('float32', [2 ** 33, 0]), /a float32 tensor of shape \[8589934592, 0\] is empty, but its other dims span more than a host tensor holds/);
    expect(tensor('float32', [1024, 0, 3]).data.length).toBe(0);
  });

  it('GatherGrad and Gather of an empty result return at once, whatever their outer dims', () => {
    const gg = getOp('GatherGrad', 't');
    const out = gg.cpu!([tensor('float32', [2, 2]), tensor('int64', [2], [0, 1])], { axis: 1, shape: [2 ** 31, 0, 2] }, 1)[0]!;
    expect(out.data.length).toBe(0);
    const ga = getOp('Gather', 't');
    expect(ga.cpu!([tensor('float32', [2 ** 31, 0]), tensor('int64', [0])], { axis: 1 }, 1)[0]!.data.length).toBe(0);
  });

  it('a lazy parameter too large for the host is a CleaveError when materialized', () => {
    const b = new ModelBuilder('lazy', { lazy: true });
    const p = b.param('w', [1 << 20, 1 << 20], 'zeros');
    refused(() => materialize(p), /a float32 tensor of shape \[1048576, 1048576\] has 1099511627776 elements, more than a host tensor holds/);
  });
});
