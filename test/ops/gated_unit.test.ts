// GatedUnit (y = act(gate) · up, SwiGLU/GeGLU's gate) and GatedUnitGrad: the fused op against the
// same graph written out with ONNX ops (Sigmoid, Mul, Tanh, Erf, Add) and run by the CPU
// interpreter, values pinned from the definitions, autodiff of the fused op against autodiff of the
// written-out graph, the node-naming errors, the cost, and the device path on the host emulation.
// Finite-difference checks are rows of test/autodiff/gradcheck.test.ts; the CUDA kernels are rows of
// test/helpers/cuda_cases.ts (emulated) and test/gpu/cuda.test.ts.
import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { toFloat64 } from '../../compiler/passes/precision.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, Graph, Value, ValueType } from '../../src/core/ir/graph.js';
import { type Tensor, bf16ToFloat, floatToBf16, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import type { DeviceTensor } from '../../src/core/ops/registry.js';
import { Rng } from '../../src/core/util/random.js';
import { maxRelError } from '../helpers/compare.js';
import { HostCuda } from '../helpers/host_cuda.js';

const ACTIVATIONS = ['silu', 'gelu_tanh', 'gelu'] as const;
type Act = (typeof ACTIVATIONS)[number];

const randn = (shape: number[], rng: Rng, dtype: DType = 'float32', scale = 2): Tensor =>
  tensor(dtype, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => scale * rng.normal()));

/** act(gate) · up written with ONNX ops only (no GatedUnit, no Gelu): the independent reference. */
function writtenOut(b: ModelBuilder, gate: Value, up: Value, act: Act): Value {
  const dtype = gate.dtype;
  const c = (x: number): Value => b.scalar(x, dtype);
  let a: Value;
  if (act === 'silu') a = b.op('Mul', [gate, b.op('Sigmoid', [gate])]);
  else if (act === 'gelu_tanh') {
    const cube = b.op('Mul', [gate, b.op('Mul', [gate, gate])]);
    const inner = b.op('Mul', [c(Math.sqrt(2 / Math.PI)), b.op('Add', [gate, b.op('Mul', [c(0.044715), cube])])]);
    a = b.op('Mul', [b.op('Mul', [c(0.5), gate]), b.op('Add', [c(1), b.op('Tanh', [inner])])]);
  } else {
    a = b.op('Mul', [b.op('Mul', [c(0.5), gate]), b.op('Add', [c(1), b.op('Erf', [b.op('Div', [gate, c(Math.SQRT2)])])])]);
  }
  return b.op('Mul', [a, up]);
}

/** The same y twice over inputs gate and up: fused (one GatedUnit) and written out. */
function pair(act: Act, dtype: DType, shape: number[]): { fused: Graph; ref: Graph } {
  const make = (fused: boolean): Graph => {
    const b = new ModelBuilder(fused ? 'fused' : 'ref');
    const gate = b.input('gate', dtype, shape), up = b.input('up', dtype, shape);
    b.output(fused ? b.op('GatedUnit', [gate, up], { activation: act }) : writtenOut(b, gate, up, act), 'y');
    return b.finish();
  };
  return { fused: make(true), ref: make(false) };
}

describe.each(ACTIVATIONS)('GatedUnit (%s)', (act) => {
  it.each([['float32', 1e-6], ['float64', 1e-13]] as const)('computes what the written-out graph computes in %s (≤ %s)', (dtype, tol) => {
    const rng = new Rng(11);
    const shape = [3, 5, 8];
    const { fused, ref } = pair(act, dtype, shape);
    // Gates out to ±6σ·2: the tails of sigmoid, tanh and erf as well as the middle.
    const feeds = { gate: randn(shape, rng, dtype, 3), up: randn(shape, rng, dtype) };
    const y = runGraph(fused, feeds).get('y')!, r = runGraph(ref, feeds).get('y')!;
    expect(fused.nodes.map((n) => n.op)).toEqual(['GatedUnit']);
    expect(y.dtype).toBe(dtype);
    expect(y.shape).toEqual(shape);
    expect(maxRelError(y, r)).toBeLessThanOrEqual(tol);
  });

  it('rounds once to a 16-bit dtype, from the float64 result', () => {
    const rng = new Rng(4);
    const g64 = randn([40], rng, 'float64'), u64 = randn([40], rng, 'float64');
    const to16 = (t: Tensor): Tensor => tensor('bfloat16', t.shape, Array.from(t.data, (x) => bf16ToFloat(floatToBf16(x))));
    const feeds = { gate: to16(g64), up: to16(u64) };
    const y = runGraph(pair(act, 'bfloat16', [40]).fused, feeds).get('y')!;
    const exact = runGraph(pair(act, 'float64', [40]).ref, { gate: tensor('float64', [40], feeds.gate.data), up: tensor('float64', [40], feeds.up.data) }).get('y')!;
    expect(y.dtype).toBe('bfloat16');
    expect(Array.from(y.data)).toEqual(Array.from(exact.data, (x) => bf16ToFloat(floatToBf16(x))));
  });

  it('has the gradients autodiff gives the written-out graph, from one GatedUnitGrad (float64 ≤ 1e-12, float32 ≤ 1e-5)', () => {
    const rng = new Rng(9);
    const shape = [4, 6];
    const data = { gate: randn(shape, rng, 'float32', 1.5), up: randn(shape, rng) };
    const R = randn(shape, rng);
    // Built in each dtype (not converted): the written-out graph's constants (√(2/π), 1/√2) are then exact in float64.
    const as = (t: Tensor, dtype: DType): Tensor => tensor(dtype, t.shape, t.data);
    const make = (fused: boolean, dtype: DType): Graph => {
      const b = new ModelBuilder(fused ? 'fused' : 'ref');
      const gate = b.graph.addParam('gate', as(data.gate, dtype)), up = b.graph.addParam('up', as(data.up, dtype));
      const y = fused ? b.op('GatedUnit', [gate, up], { activation: act }) : writtenOut(b, gate, up, act);
      b.output(b.op('ReduceSum', [b.op('Mul', [y, b.constant(as(R, dtype), 'R')])], { keepdims: 0 }), 'loss');
      return b.finish();
    };
    const spec = { loss: { kind: 'output' as const } };
    for (const [dtype, tol] of [['float32', 1e-5], ['float64', 1e-12]] as const) {
      const [tf, tr] = [make(true, dtype), make(false, dtype)].map((g) => buildTrainingGraph(g, spec));
      const grads = tf!.graph.nodes.filter((n) => n.op === 'GatedUnitGrad');
      expect(grads.length).toBe(1);
      expect(grads[0]!.attrs['activation']).toBe(act);
      expect(tf!.graph.nodes.some((n) => ['Sigmoid', 'Tanh', 'Erf', 'GeluGrad'].includes(n.op))).toBe(false);
      const rf = runGraph(tf!.graph, {}), rr = runGraph(tr!.graph, {});
      for (const p of ['gate', 'up']) {
        const a = rf.get(tf!.grads.get(p)!.name)!, e = rr.get(tr!.grads.get(p)!.name)!;
        expect(a.dtype).toBe(dtype);
        expect(maxRelError(a, e), `d${p} ${dtype}`).toBeLessThanOrEqual(tol);
      }
    }
  });
});

describe('GatedUnit values from the definitions', () => {
  // silu(1) = 1/(1 + e⁻¹); gelu(1) = Φ(1); gelu_tanh(1) = ½(1 + tanh(√(2/π)·1.044715)).
  const at1: Record<Act, number> = { silu: 0.7310585786300049, gelu: 0.8413447460685429, gelu_tanh: 0.8411919906082768 };
  // Their derivatives at 1: σ(1)(1 + 1 − σ(1)); Φ(1) + φ(1); from the tanh form by hand.
  const slope1: Record<Act, number> = { silu: 0.9276705118714869, gelu: 1.0833154705876864, gelu_tanh: 1.0829640838457826 };
  const cpu = (op: string, ins: Tensor[], attrs: Attrs, outs: number): Tensor[] => {
    const b = new ModelBuilder('v');
    const n = b.graph.nodes.length;
    b.ops(op, ins.map((t, i) => b.input(`x${i}`, t.dtype, t.shape)), attrs, outs);
    return getOp(op, 'test').cpu!(ins, b.graph.nodes[n]!.attrs, outs);
  };
  const f64 = (...xs: number[]): Tensor => tensor('float64', [xs.length], xs);

  it.each(ACTIVATIONS)('%s: act(gate) · up and its two gradients at known points', (act) => {
    const [y] = cpu('GatedUnit', [f64(1, 0, 1), f64(2, 5, -3)], { activation: act }, 1);
    expect(y!.data[0]).toBeCloseTo(2 * at1[act], 13);
    expect(y!.data[1]).toBe(0);
    expect(y!.data[2]).toBeCloseTo(-3 * at1[act], 13);
    const [dgate, dup] = cpu('GatedUnitGrad', [f64(0.5, 2), f64(1, 0), f64(3, 7)], { activation: act }, 2);
    expect(dup!.data[0]).toBeCloseTo(0.5 * at1[act], 13);
    expect(dgate!.data[0]).toBeCloseTo(0.5 * 3 * slope1[act], 12);
    // act(0) = 0 and act′(0) = ½ for all three.
    expect(dup!.data[1]).toBe(0);
    expect(dgate!.data[1]).toBeCloseTo(2 * 7 * 0.5, 13);
  });

  it('takes silu when no activation is given', () => {
    const [y] = cpu('GatedUnit', [f64(1), f64(1)], {}, 1);
    expect(y!.data[0]).toBeCloseTo(at1.silu, 13);
  });

  it('saturates without NaN far into the tails', () => {
    for (const act of ACTIVATIONS) {
      const [y] = cpu('GatedUnit', [f64(-800, 800), f64(1, 1)], { activation: act }, 1);
      expect(Math.abs(y!.data[0]!), act).toBe(0);
      expect(y!.data[1], act).toBe(800);
      const [dg, du] = cpu('GatedUnitGrad', [f64(1, 1), f64(-800, 800), f64(1, 1)], { activation: act }, 2);
      expect([...dg!.data, ...du!.data].every(Number.isFinite), act).toBe(true);
      expect(Math.abs(dg!.data[0]!)).toBe(0);
      expect(dg!.data[1]).toBe(1);
    }
  });
});

describe('gradient requests', () => {
  it('gives only the gradient an input needs (a constant up gets none), from the same GatedUnitGrad', () => {
    const rng = new Rng(3);
    const gate0 = randn([5, 4], rng), up0 = randn([5, 4], rng), R = randn([5, 4], rng);
    const b = new ModelBuilder('half');
    const gate = b.graph.addParam('gate', gate0);
    const y = b.op('GatedUnit', [gate, b.constant(up0, 'up')], { activation: 'gelu_tanh' });
    b.output(b.op('ReduceSum', [b.op('Mul', [y, b.constant(R, 'R')])], { keepdims: 0 }), 'loss');
    const t = buildTrainingGraph(toFloat64(b.finish()), { loss: { kind: 'output' } });
    expect([...t.grads.keys()]).toEqual(['gate']);
    expect(t.graph.nodes.filter((n) => n.op === 'GatedUnitGrad').length).toBe(1);
    const got = runGraph(t.graph, {}).get(t.grads.get('gate')!.name)!;
    // dgate = R · up · gelu_tanh′(gate), written here from the definition.
    const c = Math.sqrt(2 / Math.PI);
    const want = Array.from(gate0.data, (x, i) => {
      const th = Math.tanh(c * (x + 0.044715 * x ** 3));
      return R.data[i]! * up0.data[i]! * (0.5 * (1 + th) + 0.5 * x * (1 - th * th) * c * (1 + 3 * 0.044715 * x * x));
    });
    expect(maxRelError(got, tensor('float64', [5, 4], want))).toBeLessThanOrEqual(1e-6);
  });

  it('GatedUnitGrad has no gradient rule: autodiff through it names the node', () => {
    const rng = new Rng(8);
    const b = new ModelBuilder('second');
    const dy = b.graph.addParam('dy', randn([3, 4], rng));
    const [dgate] = b.ops('GatedUnitGrad', [dy, b.constant(randn([3, 4], rng), 'g'), b.constant(randn([3, 4], rng), 'u')], { activation: 'silu' }, 2);
    b.output(b.op('ReduceSum', [dgate!], { keepdims: 0 }), 'loss');
    const name = b.graph.nodes.find((n) => n.op === 'GatedUnitGrad')!.name;
    expect(() => buildTrainingGraph(b.finish(), { loss: { kind: 'output' } })).toThrow(CleaveError);
    expect(() => buildTrainingGraph(b.finish(), { loss: { kind: 'output' } })).toThrow(`node '${name}': op GatedUnitGrad has no gradient rule, and the loss depends on it`);
  });
});

type Row = [string, [(number | string)[], DType?][], Attrs, number, RegExp];

/** Every error path, each naming the node. */
const ERRORS: Row[] = [
  ['GatedUnit', [[[2, 8]], [[2, 7]]], {}, 1, /^node '\/GatedUnit': GatedUnit needs gate and up of one shape; gate is \[2, 8\] but up is \[2, 7\]$/],
  ['GatedUnit', [[[2, 8]], [[8]]], {}, 1, /^node '\/GatedUnit': GatedUnit needs gate and up of one shape; gate is \[2, 8\] but up is \[8\]$/],
  ['GatedUnit', [[['batch', 8]], [['batch', 4]]], {}, 1, /^node '\/GatedUnit': GatedUnit needs gate and up of one shape; gate is \[batch, 8\] but up is \[batch, 4\]$/],
  ['GatedUnit', [[[2, 8], 'int64'], [[2, 8], 'int64']], {}, 1, /^node '\/GatedUnit': needs a floating-point input, got int64$/],
  ['GatedUnit', [[[2, 8], 'int32'], [[2, 8], 'int32']], {}, 1, /^node '\/GatedUnit': needs a floating-point input, got int32$/],
  ['GatedUnit', [[[2, 8]], [[2, 8], 'float64']], {}, 1, /^node '\/GatedUnit': inputs have different element types \(float32 vs float64\)$/],
  ['GatedUnit', [[[2, 8]], [[2, 8]]], { activation: 'relu' }, 1, /^node '\/GatedUnit': attribute 'activation' must be one of 'silu', 'gelu_tanh', 'gelu', got 'relu'$/],
  ['GatedUnit', [[[2, 8]], [[2, 8]]], { activation: 1 }, 1, /^node '\/GatedUnit': attribute 'activation' must be one of 'silu', 'gelu_tanh', 'gelu', got 1$/],
  ['GatedUnit', [[[2, 8]], [[2, 8]]], { approximate: 'tanh' }, 1, /^node '\/GatedUnit': GatedUnit has no attribute 'approximate'$/],
  ['GatedUnit', [[[2, 8]]], {}, 1, /^node '\/GatedUnit': input 1 is required$/],
  ['GatedUnitGrad', [[[2, 8]], [[2, 8]], [[2, 9]]], {}, 2, /^node '\/GatedUnitGrad': GatedUnitGrad needs dy, gate and up of one shape; dy is \[2, 8\] but up is \[2, 9\]$/],
  ['GatedUnitGrad', [[[2, 8], 'int64'], [[2, 8], 'int64'], [[2, 8], 'int64']], {}, 2, /^node '\/GatedUnitGrad': needs a floating-point input, got int64$/],
  ['GatedUnitGrad', [[[2, 8]], [[2, 8]], [[2, 8]]], { activation: 'swish' }, 2, /^node '\/GatedUnitGrad': attribute 'activation' must be one of 'silu', 'gelu_tanh', 'gelu', got 'swish'$/],
];

it.each(ERRORS)('%s: %j %j', (op, inputs, attrs, outs, message) => {
  const b = new ModelBuilder('bad');
  const vs = inputs.map(([shape, dtype], i) => b.input(`x${i}`, dtype ?? 'float32', shape));
  expect(() => b.ops(op, vs, attrs, outs)).toThrow(CleaveError);
  expect(() => b.ops(op, vs, attrs, outs)).toThrow(message);
});

it('a symbolic dim of one input takes the static size of the other', () => {
  const b = new ModelBuilder('sym');
  const y = b.op('GatedUnit', [b.input('g', 'float32', ['batch', 8]), b.input('u', 'float32', [3, 8])]);
  expect(y.shape).toEqual([3, 8]);
  const [dg, du] = b.ops('GatedUnitGrad', [b.input('d', 'float16', ['b', 'h']), b.input('g2', 'float16', ['b', 'h']), b.input('u2', 'float16', ['b', 'h'])], {}, 2);
  expect([dg!.shape, du!.shape, dg!.dtype]).toEqual([['b', 'h'], ['b', 'h'], 'float16']);
});

it('costs the activation and product per element, and reads and writes every element once', () => {
  const ctx = (op: string, n: number, dtype: DType, act: Act) => {
    const t: ValueType = { dtype, shape: [n, 16] };
    const def = getOp(op, 'test');
    const c = { node: 'n', inputs: Array(def.arity[0]).fill(t), numOutputs: def.outputs?.[0] ?? 1, attrs: { activation: act }, consts: [] };
    return def.cost(c, def.infer(c));
  };
  expect(ctx('GatedUnit', 4, 'float32', 'silu')).toEqual({ flops: 6 * 64, bytes: 3 * 64 * 4 });
  expect(ctx('GatedUnit', 4, 'bfloat16', 'gelu')).toEqual({ flops: 14 * 64, bytes: 3 * 64 * 2 });
  expect(ctx('GatedUnitGrad', 4, 'float32', 'gelu_tanh')).toEqual({ flops: 26 * 64, bytes: 5 * 64 * 4 });
  expect(ctx('GatedUnitGrad', 2, 'float32', 'silu').flops).toBe(11 * 32);
});

describe('device calls (host emulation)', () => {
  it('GatedUnit and GatedUnitGrad call the addon once each with the activation code, and refuse other codes', () => {
    const host = new HostCuda();
    const dev = new Cuda(host.native);
    const rng = new Rng(2);
    const [dy, gate, up] = [randn([3, 5], rng), randn([3, 5], rng), randn([3, 5], rng)].map((t) => dev.upload(t)) as [DeviceTensor, DeviceTensor, DeviceTensor];
    const out = dev.alloc('float32', [3, 5]), dgate = dev.alloc('float32', [3, 5]), dup = dev.alloc('float32', [3, 5]);
    for (const [code, act] of ACTIVATIONS.entries()) {
      getOp('GatedUnit', 'test').cuda!(dev, [gate, up], [out], { activation: act });
      getOp('GatedUnitGrad', 'test').cuda!(dev, [dy, gate, up], [dgate, dup], { activation: act });
      const ref = getOp('GatedUnitGrad', 'test').cpu!([dev.download(dy), dev.download(gate), dev.download(up)], { activation: act }, 2);
      expect(maxRelError(dev.download(dgate), ref[0]!), `${act} (${code}) dgate`).toBeLessThanOrEqual(1e-6);
      expect(maxRelError(dev.download(dup), ref[1]!), `${act} (${code}) dup`).toBeLessThanOrEqual(1e-6);
    }
    expect(host.calls.get('gatedUnit')).toBe(3);
    expect(host.calls.get('gatedUnitGrad')).toBe(3);
    expect(() => dev.gatedUnit(gate, up, out, 3)).toThrow(/GatedUnit on CUDA takes activation code 0 \(silu\), 1 \(gelu_tanh\) or 2 \(gelu\), not 3/);
    expect(() => dev.gatedUnit(gate, dev.alloc('float32', [5]), out, 0)).toThrow(/GatedUnit on CUDA takes tensors of one shape, not \[3, 5\], \[5\], \[3, 5\]/);
    expect(() => dev.gatedUnitGrad(dy, gate, dev.alloc('bfloat16', [3, 5]), dgate, dup, 0)).toThrow(/GatedUnitGrad on CUDA takes tensors of one float type/);
    dev.freeAll();
  });
});
