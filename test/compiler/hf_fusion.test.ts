// The fusions on real exporter output (fixtures/hf): how many attentions each model fuses, why the
// rest stay as written, which folded buffers the import keeps constant, and that the fused graph
// still computes PyTorch's output and the unfused graph's gradients.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addLoss } from '../../compiler/autodiff/loss.js';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { frozenBuffers, importOnnx } from '../../compiler/onnx/import.js';
import { CANONICAL, attentionFusion } from '../../compiler/passes/attention.js';
import { emptyFusionReport, fuseForward } from '../../compiler/passes/fusions.js';
import { GELU_RULES } from '../../compiler/passes/gelu.js';
import { GEMM_ROWS } from '../../compiler/passes/gemm.js';
import { GLU_RULES } from '../../compiler/passes/glu.js';
import { NORM_RULES } from '../../compiler/passes/norms.js';
import { applyRules } from '../../compiler/passes/rewrite.js';
import { rotaryRules } from '../../compiler/passes/rotary.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { readNpy } from '../../runtime/data/npy.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { Rng } from '../../src/core/util/random.js';
import { cliInProcess } from '../helpers/cli.js';
import { maxRelError } from '../helpers/compare.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { gradCheck } from '../helpers/gradcheck.js';

const HF = join(FIXTURES, 'hf');
const NAMES = readdirSync(HF).filter((f) => f.endsWith('.onnx')).map((f) => f.slice(0, -'.onnx'.length)).sort();

const ROTARY = ['rotary cos table', 'rotary sin table'];
/** Per family: attentions fused (one per attention block), the reason the rest stay, the buffers kept constant by role. */
const EXPECT: Record<string, { fused: number; rms?: number; rope?: number; gelu?: number; glu?: number; unfused?: RegExp; frozen: (tag: string) => string[] }> = {
  bert: { fused: 2, gelu: 2, frozen: (t) => (t === 'dynamo18' ? ['attention mask'] : []) },
  // No attention: ConvNeXt's norms are LayerNormalization (dynamo) or written out over channels.
  convnext: { fused: 0, gelu: 4, frozen: () => [] },
  vit: { fused: 2, gelu: 2, frozen: (t) => (t === 'dynamo18' ? ['attention mask'] : []) },
  gpt2: { fused: 2, gelu: 2, frozen: (t) => (t === 'dynamo18' ? ['attention mask'] : []) },
  // Unoptimized (dynamo18raw): nothing folded, the angles computed from inv_freq in the graph.
  llama: { fused: 2, rope: 4, rms: 5, glu: 2, frozen: (t) => (t === 'dynamo18raw' ? ['rotary inverse frequencies'] : [...ROTARY, ...(t === 'dynamo18' ? ['attention mask'] : [])]) },
  // At 1024 positions the exporter folds positions ⊗ inv_freq into an initializer but not cos and sin after it.
  llama_long: { fused: 2, rope: 4, rms: 5, glu: 2, frozen: () => ['rotary angles'] },
  llama_eager: { fused: 2, rope: 4, rms: 5, glu: 2, frozen: () => [...ROTARY, 'attention mask'] },
  gemma: { fused: 2, rope: 4, rms: 5, gelu: 2, glu: 2, frozen: (t) => [...ROTARY, ...(t === 'dynamo18' ? ['attention mask'] : [])] },
  qwen2: { fused: 2, rope: 4, rms: 5, glu: 2, frozen: (t) => [...ROTARY, ...(t === 'dynamo18' ? ['attention mask'] : [])] },
  gpt_neox: { fused: 2, rope: 4, gelu: 2, frozen: (t) => [...ROTARY, ...(t === 'dynamo18' ? ['attention mask'] : [])] },
  // Mistral's sliding window is the fused kernel's window; T5's relative position bias is the fused kernel's bias input,
  // its decoder's causal mask (added to the bias) the causal flag, and its cross-attention Tk ≠ Tq.
  mistral: { fused: 2, rope: 4, rms: 5, glu: 2, frozen: (t) => [...ROTARY, ...(t === 'dynamo18' ? ['attention mask'] : [])] },
  t5: { fused: 6, rms: 12, frozen: (t) => (t === 'ts17' ? [] : ['attention mask', 'attention mask', 'attention mask']) },
};

const familyOf = (name: string): [string, string] => {
  const k = name.lastIndexOf('_');
  return [name.slice(0, k), name.slice(k + 1)];
};

interface Io { inputs: Record<string, { shape: number[]; dtype: DType; data: number[] }>; outputs: Record<string, { npy: string }> }
const feedsOf = (name: string): { feeds: Record<string, Tensor>; want: Tensor } => {
  const io = JSON.parse(readFileSync(join(HF, `${name}.io.json`), 'utf8')) as Io;
  const feeds = Object.fromEntries(Object.entries(io.inputs).map(([k, v]) => [k, tensor(v.dtype, v.shape, v.data)]));
  return { feeds, want: readNpy(join(HF, Object.values(io.outputs)[0]!.npy)) };
};

describe.each(NAMES)('%s', (name) => {
  const [family, tag] = familyOf(name);
  const e = EXPECT[family];

  it('has an expectation', () => expect(e, `no expectation for the family '${family}'`).toBeDefined());

  it('fuses one attention per block, every rotary embedding and RMSNorm, says why it leaves any attention, keeps folded buffers constant, and still computes PyTorch\'s output', () => {
    const g = importOnnx(join(HF, `${name}.onnx`), { batch: 2 });
    expect(frozenBuffers(g).map((f) => f.role).sort()).toEqual(e!.frozen(tag).sort());
    for (const f of frozenBuffers(g)) expect(g.values.get(f.name)?.kind, f.name).toBe('const');
    const f = cloneGraph(g);
    const rep = attentionFusion(f);
    applyRules(f, rotaryRules());
    // q and k of each layer: one RotaryEmbedding each, GPT-NeoX's partial one included.
    expect(f.nodes.filter((n) => n.op === 'RotaryEmbedding').length).toBe(e!.rope ?? 0);
    expect(f.nodes.some((n) => n.op === 'Neg')).toBe(false);
    const norms = applyRules(f, NORM_RULES);
    // Products as MatMul (+ bias Add) on the model's own rows; every GELU written out one Gelu node.
    applyRules(f, [...CANONICAL, ...GEMM_ROWS]);
    applyRules(f, GELU_RULES);
    // Gated MLPs (SwiGLU, GeGLU) as one GatedUnit each; the Gelu of a GeGLU goes into it.
    applyRules(f, GLU_RULES);
    validateGraph(f);
    expect(f.nodes.filter((n) => n.op === 'GatedUnit').length).toBe(e!.glu ?? 0);
    expect(f.nodes.filter((n) => n.op === 'Gelu').length).toBe((e!.gelu ?? 0) - (family === 'gemma' ? e!.glu! : 0));
    if (e!.glu) expect(f.nodes.some((n) => n.op === 'Sigmoid')).toBe(false);
    expect(f.nodes.filter((n) => ['Gemm', 'Erf', 'Pow'].includes(n.op)).map((n) => n.name)).toEqual([]);
    // Every RMSNorm is one RMSNormalization node: fused from its written-out form, or opset 23's own.
    expect(f.nodes.filter((n) => n.op === 'RMSNormalization').length).toBe(e!.rms ?? 0);
    if (e!.rms) expect(f.nodes.some((n) => n.op === 'ReduceMean')).toBe(false);
    expect(norms.get('RMSNorm') ?? 0).toBe(g.nodes.some((n) => n.op === 'RMSNormalization') ? 0 : e!.rms ?? 0);
    expect(rep.fused).toBe(e!.fused);
    expect(f.nodes.filter((n) => n.op === 'FusedAttention').length).toBe(e!.fused);
    if (e!.unfused) {
      expect(rep.unfused.length).toBeGreaterThan(0);
      for (const u of rep.unfused) expect(u.reason).toMatch(e!.unfused);
    } else {
      expect(rep.unfused).toEqual([]);
      expect(f.nodes.some((n) => n.op === 'Softmax' || n.op === 'Attention')).toBe(false);
    }
    const { feeds, want } = feedsOf(name);
    const got = [...runGraph(f, feeds).values()][0]!;
    let worst = 0;
    for (let i = 0; i < want.data.length; i++) worst = Math.max(worst, Math.abs(got.data[i]! - want.data[i]!));
    expect(worst, `${name}: worst |Δ| against PyTorch after fusion`).toBeLessThanOrEqual(1e-4);
  });
});

/** Loss and gradients of the training graph with and without the forward fusions (attention, RMSNorm), on the same feeds. */
function trainBoth(g: Graph, feeds: Record<string, Tensor>, fused: number, rotary = true): void {
  const spec = { loss: { kind: 'cross-entropy' as const } };
  const plain = buildTrainingGraph(g, spec);
  let n = 0;
  const report = emptyFusionReport();
  const fusedT = buildTrainingGraph(g, { ...spec, rewrite: (x) => fuseForward(x, report) });
  n = report.rules.find((r) => r.rule === 'attention')?.count ?? 0;
  expect(n).toBe(fused);
  // RMSNorms train through their fused node too; rotary runs on the rows before the head split (q and k of each layer).
  const rms = report.rules.find((r) => r.rule === 'RMSNorm')?.count ?? 0;
  expect(report.rules.find((r) => r.rule === 'rotary before the head split')?.count ?? 0).toBe(rotary ? 2 * fused : 0);
  expect(fusedT.graph.nodes.filter((x) => x.op === 'RotaryEmbedding' && x.attrs['num_heads']).length).toBe(rotary ? 4 * fused : 0);
  expect(fusedT.graph.nodes.filter((x) => x.op === 'RMSNormalizationGradInput').length).toBe(rms);
  expect(fusedT.graph.nodes.filter((x) => x.op === 'FusedAttentionGrad').length).toBe(fused);
  const [a, b] = [runGraph(plain.graph, feeds), runGraph(fusedT.graph, feeds)];
  expect(maxRelError(b.get(fusedT.loss.name)!, a.get(plain.loss.name)!)).toBeLessThanOrEqual(1e-6);
  expect([...fusedT.grads.keys()].sort()).toEqual([...plain.grads.keys()].sort());
  for (const [p, v] of plain.grads) expect(maxRelError(b.get(fusedT.grads.get(p)!.name)!, a.get(v.name)!), p).toBeLessThanOrEqual(1e-4);
}

describe('training through the fused attention of real models', () => {
  const labels = (): Tensor => { const r = new Rng(3); return tensor('int64', [2, 16], Array.from({ length: 32 }, () => r.int(256))); };

  it.each([['llama_dynamo18', 2], ['gemma_dynamo18', 2]] as const)('%s: the same loss and gradients as the unfused graph', (name, fused) => {
    const g = importOnnx(join(HF, `${name}.onnx`), { batch: 2 });
    const { feeds } = feedsOf(name);
    feeds['labels'] = labels();
    trainBoth(g, feeds, fused);
  });

  // T5: the relative position bias trained through the fused node's bias (computed from its embedding
  // by the TorchScript export, a folded parameter in the dynamo one), the decoder's causal attention
  // and the cross-attention over the encoder's 16 positions from the decoder's 8.
  it.each(['t5_ts17', 't5_dynamo18'])('%s: the same loss and gradients (relative bias included) as the unfused graph', (name) => {
    const g = importOnnx(join(HF, `${name}.onnx`), { batch: 2 });
    const { feeds } = feedsOf(name);
    const r = new Rng(5);
    feeds['labels'] = tensor('int64', [2, 8], Array.from({ length: 16 }, () => r.int(256)));
    trainBoth(g, feeds, 6, false);
  });

  // Attention with an attn_mask trains only fused (its own gradient takes no mask): the fused
  // graph's gradients against central differences, and its loss against the dynamo18 export of the
  // same model (same weights) trained unfused.
  it.each(['gpt2'])('%s_dynamo23: fused gradients match finite differences, and its loss the dynamo18 export\'s', (family) => {
    const g = cloneGraph(importOnnx(join(HF, `${family}_dynamo23.onnx`), { batch: 2 }));
    expect(attentionFusion(g).fused).toBe(2);
    const b = new ModelBuilder(g);
    const { loss, labels: l } = addLoss(b, { kind: 'cross-entropy' });
    g.outputs.length = 0;
    b.output(loss, 'loss');
    const { feeds } = feedsOf(`${family}_dynamo23`);
    feeds[l!.name] = labels();
    const r = gradCheck(g, feeds, { samples: 2, h: 1e-4 });
    expect(r.f64).toBeLessThanOrEqual(1e-6);
    expect(r.f32).toBeLessThanOrEqual(1e-3);
    const g18 = importOnnx(join(HF, `${family}_dynamo18.onnx`), { batch: 2 });
    const spec = { loss: { kind: 'cross-entropy' as const } };
    const t18 = buildTrainingGraph(g18, spec);
    const f18 = feedsOf(`${family}_dynamo18`).feeds;
    f18['labels'] = labels();
    const want = runGraph(t18.graph, f18).get(t18.loss.name)!;
    const got = runGraph(g, feeds).get('loss')!;
    expect(maxRelError(got, want)).toBeLessThanOrEqual(1e-6);
  });

  it('the rotary tables and the mask are not trained: no gradient is asked for them', () => {
    const g = importOnnx(join(HF, 'llama_dynamo18.onnx'), { batch: 2 });
    const t = buildTrainingGraph(g, { loss: { kind: 'cross-entropy' } });
    for (const f of frozenBuffers(g)) expect(t.grads.has(f.name), f.name).toBe(false);
  });
});

describe('cleave compile on a real model', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'cleave-hf-fusion-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('prints the fusions, the kept buffers and what stays unfused, and the same in --json', async () => {
    const out = await cliInProcess(['compile', join(HF, 'mistral_dynamo18.onnx'), '-p', '2', '-m', '2', '-o', join(tmp, 'mistral.plan')]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/2 microbatches of 2/);
    expect(out.stdout).toMatch(/buffers: 3 initializers the exporter folded from buffers, kept constant \(not trained\)/);
    expect(out.stdout).toMatch(/unsqueeze_16 +rotary cos table/);
    expect(out.stdout).toMatch(/not fused: nothing attention-like left/);
    // T5's relative position bias (a trained parameter added to the scores) and cross-attention fuse too.
    const t5 = await cliInProcess(['compile', join(HF, 't5_dynamo18.onnx'), '-p', '2', '-m', '2', '-o', join(tmp, 't5.plan')]);
    expect(t5.code, t5.stderr).toBe(0);
    expect(t5.stdout).toMatch(/attention +6/);
    expect(t5.stdout).toMatch(/not fused: nothing attention-like left/);
    const j = await cliInProcess(['compile', join(HF, 'llama_dynamo23.onnx'), '-p', '2', '-m', '2', '--json', '-o', join(tmp, 'llama.plan')]);
    expect(j.code, j.stderr).toBe(0);
    const rep = (JSON.parse(j.stdout) as { fusions: { rules: { rule: string; count: number }[]; unfused: unknown[]; frozen: { role: string }[] } }).fusions;
    expect(rep.rules).toContainEqual({ rule: 'ONNX Attention', count: 2 });
    expect(rep.unfused).toEqual([]);
    expect(rep.frozen.map((f) => f.role)).toEqual(ROTARY);
  });

  it('inspect --fusions says the same of the forward graph, as text and JSON', async () => {
    const t = await cliInProcess(['inspect', join(HF, 't5_ts17.onnx'), '--batch', '2', '--fusions']);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/RMSNorm +12/);
    expect(t.stdout).toMatch(/attention +6/);
    expect(t.stdout).toMatch(/not fused: nothing attention-like left/);
    const j = await cliInProcess(['inspect', join(HF, 'llama_dynamo18.onnx'), '--batch', '2', '--fusions', '--json']);
    expect(j.code, j.stderr).toBe(0);
    const f = (JSON.parse(j.stdout) as { fusions: { rules: { rule: string; count: number }[]; frozen: unknown[]; unfused: unknown[] } }).fusions;
    expect(f.rules).toContainEqual({ rule: 'attention', count: 2 });
    expect(f.rules).toContainEqual({ rule: 'RMSNorm', count: 5 });
    expect(f.frozen).toHaveLength(3);
    expect(f.unfused).toEqual([]);
  });

  it('names each attention it leaves unfused with the reason (a bool key-padding mask from a model input)', async () => {
    const bld = new ModelBuilder('pad');
    const [B, T, H, Dh] = [2, 4, 2, 4];
    const [q, k, v] = ['q', 'k', 'v'].map((n) => bld.input(n, 'float32', [B, T, H * Dh]));
    const keep = bld.input('attention_mask', 'bool', [B, 1, 1, T]);
    const split = (t: Value, perm: number[]): Value => bld.op('Transpose', [bld.op('Reshape', [t], { shape: [0, 0, H, Dh] })], { perm });
    const scores = bld.op('Mul', [bld.op('MatMul', [split(q!, [0, 2, 1, 3]), split(k!, [0, 2, 3, 1])]), bld.scalar(0.5)]);
    const p = bld.op('Softmax', [bld.op('Where', [keep, scores, bld.scalar(-1e9)])], { axis: -1 });
    bld.output(bld.op('Reshape', [bld.op('Transpose', [bld.op('MatMul', [p, split(v!, [0, 2, 1, 3])])], { perm: [0, 2, 1, 3] })], { shape: [0, 0, H * Dh] }), 'out');
    const file = join(tmp, 'padded.onnx');
    writeOnnx(bld.finish(), file);
    const t = await cliInProcess(['inspect', file, '--fusions']);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/not fused: 1 attention-like softmax\n/);
    expect(t.stdout).toMatch(/\/Softmax +the mask is computed from the model input 'attention_mask' \(a key-padding mask\?\): not fused yet/);
  });

  it('names the parameters the exporter made by folding (ViT\'s class token per batch item among them), and what an unoptimized export keeps', async () => {
    const t = await cliInProcess(['inspect', join(HF, 'vit_dynamo18.onnx'), '--batch', '2', '--fusions', '--json']);
    expect(t.code, t.stderr).toBe(0);
    const folded = (JSON.parse(t.stdout) as { fusions: { folded: string[] } }).fusions.folded;
    expect(folded).toContain('expand');
    for (const n of folded) expect(n.includes('.'), n).toBe(false);
    const txt = await cliInProcess(['inspect', join(HF, 't5_ts17.onnx'), '--batch', '2', '--fusions']);
    expect(txt.stdout).toMatch(/note: 33 parameters are not the model's own but the exporter's folding of them \(onnx::MatMul_708, .*do_constant_folding=False/);
    // cleave's own exports name what they hold: nothing to say.
    const own = await cliInProcess(['inspect', join(FIXTURES, 'gpt.onnx'), '--fusions', '--json']);
    expect((JSON.parse(own.stdout) as { fusions: { folded: string[] } }).fusions.folded).toEqual([]);
  });

  it('a --batch the fixed-batch export cannot take is refused, naming the input', async () => {
    const out = await cliInProcess(['compile', join(HF, 'llama_dynamo18.onnx'), '-p', '2', '-m', '2', '--batch', '2', '-o', join(tmp, 'x.plan')]);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/--batch 2 makes microbatches of 1, but the model's input 'input_ids' has a fixed batch of 2 \(\[2,16\]\): use --batch 4/);
  });
});
