// Einsum beyond the shared rows (onnxruntime comparisons in test/ops/ops.test.ts, finite differences
// in test/autodiff/gradcheck.test.ts, CUDA rows in test/helpers/einsum_cases.ts): the errors, each
// naming the node; symbolic shapes; the cost; what numpy allows and onnxruntime refuses (ellipsis
// axes summed away); the ONNX round trip; and the CUDA kernel on the host emulation, temporaries
// freed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { compile } from '../../compiler/compile.js';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { planWeights, runOnBackend } from '../../runtime/launch/cuda.js';
import { writePlan } from '../../src/core/plan/io.js';
import { runGraphCuda } from '../../runtime/backends/cuda/graph.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { Dim } from '../../src/core/ir/shape.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { parseEquation } from '../../src/core/ops/einsum.js';
import { Rng } from '../../src/core/util/random.js';
import { caseErrors, caseName } from '../helpers/cuda_cases.js';
import { EINSUM_KERNEL_CASES } from '../helpers/einsum_cases.js';
import { HostCuda } from '../helpers/host_cuda.js';

const randn = (shape: number[], rng: Rng): Tensor => tensor('float32', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));

type ErrorRow = [string, Dim[][], RegExp];

const ERRORS: ErrorRow[] = [
  ['ij,jk->ik', [[2, 3]], /^node '\/Einsum': Einsum equation 'ij,jk->ik' has 2 operands, the node has 1 input$/],
  ['ij->ij', [[2, 3], [3, 4]], /^node '\/Einsum': Einsum equation 'ij->ij' has 1 operand, the node has 2 inputs$/],
  ['ijk,jk->i', [[2, 3], [3, 4]], /^node '\/Einsum': Einsum equation 'ijk,jk->i': operand 0 has rank 2, but its subscripts 'ijk' name 3 axes$/],
  ['...ijk->i', [[2, 3]], /^node '\/Einsum': Einsum equation '...ijk->i': operand 0 has rank 2, but its subscripts '...ijk' name at least 3 axes$/],
  ['ij,jk->ik', [[2, 3], [4, 5]], /^node '\/Einsum': Einsum equation 'ij,jk->ik': index 'j' has size 3 in operand 0 \[2, 3\] but 4 in operand 1 \[4, 5\]$/],
  ['...i,...i->...', [[2, 3], [4, 3]], /^node '\/Einsum': Einsum equation '...i,...i->...': the '...' axes of operand 0 \[2, 3\] and operand 1 \[4, 3\] do not broadcast$/],
  ['ij,j1->i', [[2, 3], [3, 1]], /^node '\/Einsum': Einsum equation 'ij,j1->i': bad character '1' in operand 1 \(subscripts are letters a-z, A-Z and '...'\)$/],
  ['ij->k', [[2, 3]], /^node '\/Einsum': Einsum equation 'ij->k': output index 'k' is in no operand$/],
  ['ii->i', [[3, 3]], /^node '\/Einsum': Einsum equation 'ii->i': index 'i' repeats in operand 0; diagonals \(an index repeated within one operand\) are not supported$/],
  ['ij->ii', [[3, 3]], /^node '\/Einsum': Einsum equation 'ij->ii': index 'i' repeats in the output; an output index appears once$/],
  ['i..j->ij', [[3, 3]], /^node '\/Einsum': Einsum equation 'i..j->ij': operand 0 has a '.' that is not part of '...'$/],
  ['i->i->i', [[3]], /^node '\/Einsum': Einsum equation 'i->i->i' has more than one '->'$/],
  ['ij->...i', [[3, 4]], /^node '\/Einsum': Einsum equation 'ij->...i': the output has '...' but no operand has$/],
];

describe('Einsum errors name the node', () => {
  it.each(ERRORS)('%s on %j', (equation, shapes, message) => {
    const b = new ModelBuilder('bad');
    const xs = shapes.map((s, i) => b.input(`x${i}`, 'float32', s));
    expect(() => b.op('Einsum', xs, { equation })).toThrow(CleaveError);
    expect(() => b.op('Einsum', xs, { equation })).toThrow(message);
  });

  it('an element type that is not numeric, and mixed element types', () => {
    const b = new ModelBuilder('bad');
    const x = b.input('x', 'bool', [2]);
    expect(() => b.op('Einsum', [x], { equation: 'i->i' })).toThrow(/^node '\/Einsum': Einsum takes numeric operands, got bool$/);
    const y = b.input('y', 'float32', [2]), z = b.input('z', 'int64', [2]);
    expect(() => b.op('Einsum', [y, z], { equation: 'i,i->' })).toThrow(/^node '\/Einsum': inputs have different element types \(float32 vs int64\)$/);
  });

  it('the equation attribute is required', () => {
    const b = new ModelBuilder('bad');
    expect(() => b.op('Einsum', [b.input('x', 'float32', [2])], {})).toThrow(/node '\/Einsum': Einsum needs the attribute 'equation'/);
  });

  it('a gradient through ellipsis axes the output sums away is refused, naming the node', () => {
    const b = new ModelBuilder('g');
    const w = b.param('w', [2, 3], { normal: 1 });
    b.output(b.op('ReduceSum', [b.op('Einsum', [w], { equation: '...j->j' })], { keepdims: 0 }), 'loss');
    expect(() => buildTrainingGraph(b.finish(), { loss: { kind: 'output' } }))
      .toThrow(/node '\/Einsum': the gradient of Einsum '\.\.\.j->j' for input 0: its '\.\.\.' axes are summed out of the output/);
  });
});

describe('Einsum shapes and cost', () => {
  it('infers symbolic dims, and takes a static size over a symbolic one', () => {
    const b = new ModelBuilder('sym');
    const q = b.input('q', 'float32', ['batch', 4, 'seq', 8]);
    const k = b.input('k', 'float32', ['batch', 4, 'seq', 8]);
    expect(b.op('Einsum', [q, k], { equation: 'bhqd,bhkd->bhqk' }).shape).toEqual(['batch', 4, 'seq', 'seq']);
    const x = b.input('x', 'float32', ['n', 5]), y = b.input('y', 'float32', [3, 5]);
    expect(b.op('Einsum', [x, y], { equation: 'ij,kj->ik' }).shape).toEqual(['n', 3]);
    const e = b.input('e', 'float32', ['batch', 1, 6, 7]), f = b.input('f', 'float32', [3, 7, 2]);
    expect(b.op('Einsum', [e, f], { equation: '...ij,...jk->...ik' }).shape).toEqual(['batch', 3, 6, 2]);
    expect(b.op('Einsum', [x], { equation: ' i j -> j i ' }).shape).toEqual([5, 'n']);
  });

  it('parses the implicit form: letters used once, alphabetically, after the ellipsis', () => {
    const p = parseEquation('kj,ji', undefined, 'test');
    expect(p.output.letters).toEqual(['i', 'k']);
    expect(parseEquation('...ba', undefined, 'test').output).toEqual({ letters: ['a', 'b'], ellipsis: 0 });
    expect(parseEquation('Ab,bac', undefined, 'test').output.letters).toEqual(['A', 'a', 'c']);
  });

  it('counts 2·M·N·K for a product and the sums of a chain', () => {
    const def = getOp('Einsum', 'test');
    const ctx = (shapes: number[][], equation: string) => ({ node: 'n', inputs: shapes.map((shape) => ({ dtype: 'float32' as const, shape })), numOutputs: 1, attrs: { equation }, consts: [] });
    const c1 = ctx([[3, 4], [4, 5]], 'ij,jk->ik');
    expect(def.cost(c1, def.infer(c1)).flops).toBe(2 * 3 * 4 * 5);
    const c2 = ctx([[2, 3], [3, 4], [4, 5]], 'ij,jk,kl->il');
    expect(def.cost(c2, def.infer(c2)).flops).toBe(2 * 2 * 3 * 4 + 2 * 2 * 4 * 5);
    const c3 = ctx([[3, 4]], 'ij->i');
    expect(def.cost(c3, def.infer(c3)).flops).toBe(12);
    expect(def.cost(c1, def.infer(c1)).bytes).toBe(4 * (12 + 20 + 15));
  });
});

describe('Einsum values', () => {
  it('sums ellipsis axes the explicit output leaves out (numpy does; onnxruntime refuses)', () => {
    const rng = new Rng(2);
    const a = randn([2, 3, 4], rng), bb = randn([3, 4], rng);
    const [y] = getOp('Einsum', 'test').cpu!([a, bb], { equation: '...ij,ij->j' }, 1);
    const want = Array.from({ length: 4 }, (_, j) => {
      let s = 0;
      for (let e = 0; e < 2; e++) for (let i = 0; i < 3; i++) s += a.data[e * 12 + i * 4 + j]! * bb.data[i * 4 + j]!;
      return s;
    });
    expect(y!.shape).toEqual([4]);
    Array.from(y!.data).forEach((v, j) => expect(v).toBeCloseTo(want[j]!, 5));
  });

  it('gives zeros for a contraction over an empty axis, and an empty output for an empty free axis', () => {
    const def = getOp('Einsum', 'test');
    const [z] = def.cpu!([tensor('float32', [2, 0]), tensor('float32', [0, 3])], { equation: 'ij,jk->ik' }, 1);
    expect(z!.shape).toEqual([2, 3]);
    expect(Array.from(z!.data)).toEqual([0, 0, 0, 0, 0, 0]);
    const [e] = def.cpu!([tensor('float32', [0, 2]), tensor('float32', [2, 3])], { equation: 'ij,jk->ik' }, 1);
    expect(e!.shape).toEqual([0, 3]);
  });

  it('survives the ONNX round trip and runs on the CPU interpreter', () => {
    const rng = new Rng(4);
    const b = new ModelBuilder('rt', { opset: 17 });
    const x = b.input('x', 'float32', [2, 3, 4]), y = b.input('y', 'float32', [2, 4, 5]);
    b.output(b.op('Einsum', [x, y], { equation: 'bij, bjk -> bik' }), 'out');
    const dir = mkdtempSync(join(tmpdir(), 'einsum-'));
    try {
      const file = join(dir, 'm.onnx');
      writeOnnx(b.finish(), file);
      const g = importOnnx(file);
      expect(g.nodes.map((n) => n.op)).toEqual(['Einsum']);
      expect(g.nodes[0]!.attrs['equation']).toBe('bij, bjk -> bik');
      const feeds = { x: randn([2, 3, 4], rng), y: randn([2, 4, 5], rng) };
      const out = runGraph(g, feeds).get('out')!;
      const [ref] = getOp('MatMul', 'test').cpu!([feeds.x, feeds.y], {}, 1);
      expect(Array.from(out.data)).toEqual(Array.from(ref!.data));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Einsum on the host emulation of CUDA', () => {
  it.each(EINSUM_KERNEL_CASES.map((c) => [caseName(c), c] as const))('%s matches the CPU kernel, its temporaries freed', (_, c) => {
    const host = new HostCuda();
    for (const e of caseErrors(c, (g, feeds, precision) => runGraphCuda(g, feeds, precision, new Cuda(host.native)))) {
      expect(e.f32, `${e.output} float32`).toBeLessThanOrEqual(1e-5);
      expect(e.bf16, `${e.output} bfloat16`).toBeLessThanOrEqual(1e-2);
      expect(e.f16, `${e.output} float16`).toBeLessThanOrEqual(5e-3);
    }
    expect(host.liveBlocks, 'device memory left allocated').toBe(0);
  });

  it('allocates temporaries only where an operand must be permuted, and frees each before returning', () => {
    const host = new HostCuda();
    const dev = new Cuda(host.native);
    const rng = new Rng(6);
    const run = (equation: string, shapes: number[][], outShape: number[]): number => {
      const ins = shapes.map((s) => dev.upload(randn(s, rng)));
      const out = dev.alloc('float32', outShape);
      const before = dev.allocations;
      let peak = before;
      const alloc = dev.alloc.bind(dev);
      dev.alloc = (dtype, shape) => { const t = alloc(dtype, shape); peak = Math.max(peak, dev.allocations); return t; };
      getOp('Einsum', 'test').cuda!(dev, ins, [out], { equation });
      dev.alloc = alloc;
      expect(dev.allocations, `${equation}: temporaries left`).toBe(before);
      for (const t of [...ins, out]) dev.free(t);
      return peak - before;
    };
    expect(run('bhqd,bhkd->bhqk', [[2, 3, 4, 8], [2, 3, 5, 8]], [2, 3, 4, 5])).toBe(0);
    expect(run('bhqk,bhkd->bhqd', [[2, 3, 4, 5], [2, 3, 5, 8]], [2, 3, 4, 8])).toBe(0);
    expect(run('bqhd,bkhd->bhqk', [[2, 4, 3, 8], [2, 5, 3, 8]], [2, 3, 4, 5])).toBe(2);
    expect(run('ij,jk,kl->il', [[2, 3], [3, 4], [4, 5]], [2, 5])).toBe(1);
    dev.freeAll();
    expect(host.liveBlocks).toBe(0);
  });
});

describe('a model of Einsums trained on the CUDA rank backend (host emulation)', () => {
  it('gives the CPU ranks\' losses, its gradients Einsums too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-einsum-'));
    try {
      const b = new ModelBuilder('ein', { opset: 17, seed: 3 });
      const x = b.input('x', 'float32', [4, 6]);
      const w1 = b.param('w1', [6, 8], { normal: 0.4 }), w2 = b.param('w2', [8, 3], { normal: 0.4 });
      const s = b.param('s', [2, 4], { normal: 0.4 });
      // x·W1 reshaped to heads, scaled per head and position by s, then ·W2 through a three-operand chain.
      const h = b.op('Einsum', [x, w1], { equation: 'bi,ij->bj' });
      const heads = b.op('Reshape', [h], { shape: [4, 2, 4] });
      const scaled = b.op('Einsum', [heads, s], { equation: 'bhd,hd->bhd' });
      const flat = b.op('Reshape', [scaled], { shape: [4, 8] });
      b.output(b.op('Einsum', [flat, w2, b.constant(tensor('float32', [3, 3], [1, 0, 0, 0, 2, 0, 0, 0, 1]), 'mix')], { equation: 'bj,jk,kl->bl' }), 'y');
      const model = join(dir, 'ein.onnx');
      writeOnnx(b.finish(), model);
      const planFile = join(dir, 'ein.plan');
      const plan = compile({ model, loss: { kind: 'mse' }, partitions: 1, microbatches: 2, schedule: '1f1b', batch: 8 }).plan;
      expect(plan.nodes.filter((n) => n.op === 'Einsum').length).toBeGreaterThan(3);
      writePlan(planFile, plan);
      const labels = plan.values[plan.model.labelsValue]!.name;
      const r = (i: number) => Math.sin(i * 1.3);
      const batch = { x: tensor('float32', [8, 6], Array.from({ length: 48 }, (_, i) => r(i))), [labels]: tensor('float32', [8, 3], Array.from({ length: 24 }, (_, i) => r(i + 50))) };
      const run = { data: { kind: 'batches' as const, batches: [batch, batch, batch] }, steps: 3, optimizer: { kind: 'adamw' as const, lr: 1e-2 } };
      const host = new HostCuda();
      const backend = new CudaRankBackend(plan, 0, planWeights(plan), run.optimizer, new Cuda(host.native));
      const gpu = (await runOnBackend(backend, { planFile, ...run })).steps.map((st) => st.loss);
      const cpu = (await runPlanCpu({ planFile, ...run })).steps.map((st) => st.loss);
      cpu.forEach((l, i) => expect(Math.abs(gpu[i]! - l) / l, `step ${i + 1}`).toBeLessThanOrEqual(1e-5));
      expect(gpu[2]!).toBeLessThan(gpu[0]!);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
