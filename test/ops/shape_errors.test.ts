import { expect, it } from 'vitest';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs } from '../../src/core/ir/graph.js';
import '../../src/core/ops/index.js';

type Row = [string, [number[], DType?][], Attrs, RegExp, number?];

/** Shape inference errors name the node and the shapes involved. */
const ROWS: Row[] = [
  ['MatMul', [[[2, 3]], [[4, 5]]], {}, /node '\/MatMul': inner dimensions of MatMul do not match: \[2, 3\] and \[4, 5\]/],
  ['Gemm', [[[2, 3]], [[2, 5]]], {}, /node '\/Gemm': inner dimensions of Gemm do not match: \[2, 3\] and \[2, 5\]/],
  ['Add', [[[2, 3]], [[4, 3]]], {}, /node '\/Add': shapes \[2, 3\] and \[4, 3\] do not broadcast/],
  ['Concat', [[[2, 3]], [[4, 2]]], { axis: 1 }, /node '\/Concat': cannot concatenate \[2, 3\] and \[4, 2\] along axis 1/],
  ['Reshape', [[[2, 3]]], { shape: [4, 2] }, /node '\/Reshape': cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\] \(8 elements\)/],
  ['Conv', [[[1, 3, 5, 5]], [[4, 2, 3, 3]]], {}, /node '\/Conv': weight \[4, 2, 3, 3\] with group 1 expects 2 input channels, input \[1, 3, 5, 5\] has 3/],
  ['Split', [[[2, 6]]], { axis: 1, split: [2, 2] }, /node '\/Split': split \[2, 2\] does not add up to dimension 1 of \[2, 6\]/, 2],
  ['Gather', [[[3, 4]], [[2], 'float32']], {}, /node '\/Gather': indices must be int32 or int64, got float32/],
  ['Where', [[[3], 'float32'], [[3]], [[3]]], {}, /node '\/Where': condition must be bool, got float32/],
  ['Softmax', [[[2, 3]]], { axis: 2 }, /node '\/Softmax': axis 2 is out of range for rank 2/],
  ['Add', [[[2]], [[2], 'int64']], {}, /node '\/Add': inputs have different element types \(float32 vs int64\)/],
  ['Transpose', [[[2, 3]]], { perm: [0, 0] }, /node '\/Transpose': perm \[0, 0\] is not a permutation of 2 axes/],
  ['Squeeze', [[[2, 3]]], { axes: [0] }, /node '\/Squeeze': cannot squeeze axis 0 of \[2, 3\]: its size is not 1/],
  ['MaxPool', [[[1, 1, 2, 2]]], { kernel_shape: [3, 3] }, /node '\/MaxPool': window \[3, 3\] does not fit the input's spatial size \[2, 2\]/],
  ['Relu', [[[2]]], { alpha: 1 }, /node '\/Relu': Relu has no attribute 'alpha'/],
  ['Concat', [[[2]]], {}, /node '\/Concat': Concat needs the attribute 'axis'/],
];

it.each(ROWS)('%s: %s', (op, inputs, attrs, message, outputs) => {
  const b = new ModelBuilder('bad');
  const vs = inputs.map(([shape, dtype], i) => b.input(`x${i}`, dtype ?? (op === 'Where' && i === 0 ? 'bool' : 'float32'), shape));
  expect(() => b.ops(op, vs, attrs, outputs ?? 1)).toThrow(CleaveError);
  expect(() => b.ops(op, vs, attrs, outputs ?? 1)).toThrow(message);
});

/** Attribute and shape errors of ops built in code, where the validator and shape functions meet. */
const MORE_ROWS: Row[] = [
  ['Conv', [[[1, 1, 5, 5]], [[1, 1, 3, 3]]], { strides: [1, 0] }, /^node '\/Conv': attribute 'strides' must be positive integers, got \[1, 0\]$/],
  ['Conv', [[[1, 1, 5, 5]], [[1, 1, 3, 3]]], { group: -1 }, /^node '\/Conv': attribute 'group' must be a positive integer, got -1$/],
  ['MaxPool', [[[1, 1, 4, 4]]], { kernel_shape: [2, 2], dilations: [0, 1] }, /^node '\/MaxPool': attribute 'dilations' must be positive integers, got \[0, 1\]$/],
  ['Slice', [[[4, 4]]], { starts: [0], ends: [2], axes: [0, 1] }, /node '\/Slice': Slice has 1 starts and ends but 2 axes and 1 steps; they must be as many/],
  ['Slice', [[[4, 4]]], { starts: [0, 1], ends: [2, 3], axes: [0, -2] }, /node '\/Slice': Slice axes \[0, -2\] repeat axis 0/],
  ['Slice', [[[4]]], { starts: [0], ends: [2], steps: [0] }, /^node '\/Slice': input 'steps' must be non-zero integers, got \[0\]$/],
  ['Split', [[[2, 6]]], { axis: 1, num_outputs: 3 }, /node '\/Split': num_outputs 3 does not match the node's 2 outputs/, 2],
  ['Transpose', [[[2, 3]]], { perm: 1 }, /^node '\/Transpose': attribute 'perm' must be a list of integers, got 1$/],
  ['Gemm', [[[2, 3]], [[3, 4]]], { transB: 0.5 }, /^node '\/Gemm': attribute 'transB' must be 0 or 1, got 0\.5$/],
];

it.each(MORE_ROWS)('%s: %s (attributes)', (op, inputs, attrs, message, outputs) => {
  const b = new ModelBuilder('bad');
  const vs = inputs.map(([shape, dtype], i) => b.input(`x${i}`, dtype ?? 'float32', shape));
  expect(() => b.ops(op, vs, attrs, outputs ?? 1)).toThrow(CleaveError);
  expect(() => b.ops(op, vs, attrs, outputs ?? 1)).toThrow(message);
});
