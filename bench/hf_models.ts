// One-GPU training of Hugging Face models from their torch.onnx export, against PyTorch training the
// same HF model on the same card in the same run: HF GPT-2 at the benchmark's shape (24 layers,
// d 2048, 16 heads, seq 1024, vocab 50304) and HF Llama at TinyLlama-1.1B's (22 layers, d 2048,
// 32 heads, 4 KV heads, ffn 5632, vocab 32000). Random weights from one seed; bench/hf_models.py
// exports each with torch.onnx.export(dynamo=True) and external data, and trains it in PyTorch
// eager (SDPA, bf16 autocast, fused AdamW) and torch.compile. cleave compiles the ONNX file
// (bf16 compute, float32 master weights, AdamW, 8 microbatches of 4 × 1024 tokens) and trains it.
//
//   node dist/bench/hf_models.js [--models gpt2,llama] [--layers N] [--steps 4] [--no-compile] [--no-torch] [--no-builder] [--profile]
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from '../compiler/compile.js';
import { benchGpt, randomWeights } from './gpt_model.js';
import { cudaAvailable } from '../runtime/backends/cuda/native.js';
import { planWeights, runWithWeights } from '../runtime/launch/cuda.js';
import { table } from '../src/core/util/format.js';
import { writePlan } from '../src/core/plan/io.js';
import '../src/core/ops/index.js';

const argOf = (k: string): string | undefined => {
  const i = process.argv.indexOf(`--${k}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const models = (argOf('models') ?? 'gpt2,llama').split(',');
const layers = Number(argOf('layers') ?? 0);
const steps = Number(argOf('steps') ?? 4);
const withCompile = !process.argv.includes('--no-compile');
const withTorch = !process.argv.includes('--no-torch');
const withBuilder = !process.argv.includes('--no-builder');
const profile = process.argv.includes('--profile');
const SEQ = 1024, MICRO = 4, M = 8;
const script = fileURLToPath(new URL('../../bench/hf_models.py', import.meta.url));
if (!cudaAvailable()) {
  console.log('no CUDA device: this benchmark runs on a GPU host');
  process.exit(0);
}
const log = (m: string): void => void process.stderr.write(`[${(performance.now() / 1000).toFixed(1)} s] ${m}\n`);
const py = (args: string[], timeoutMs: number): { ok: boolean; out: string; err: string } => {
  const r = spawnSync('python3', [script, ...args, ...(layers ? ['--layers', String(layers)] : [])], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 26 });
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr ?? '').trim().split('\n').at(-1) ?? `exit ${r.status}` };
};

const rows: string[][] = [];
const notes: string[] = [];
for (const name of models) {
  const dir = mkdtempSync(join(tmpdir(), `cleave-hf-${name}-`));
  log(`${name}: exporting with torch.onnx (dynamo, external data)`);
  const ex = py(['export', name, dir], 900_000);
  if (!ex.ok) { rows.push([name, `export failed: ${ex.err}`, '', '', '', '', '']); continue; }
  const file = join(dir, 'model.onnx');
  const t0 = performance.now();
  const { plan, fusions } = compile({ model: file, loss: { kind: 'cross-entropy' }, partitions: 1, microbatches: M, schedule: '1f1b', batch: M * MICRO, policy: 'bf16', device: 'h100' });
  const planFile = join(dir, 'model.plan');
  writePlan(planFile, plan);
  const fused = plan.nodes.filter((n) => n.op === 'FusedAttention').length;
  log(`${name}: compiled in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${plan.nodes.length} nodes, ${fused} fused attentions, ${fusions.unfused.length} unfused; rules ${fusions.rules.map((r) => `${r.rule} ×${r.count}`).join(', ')}`);
  const params = plan.model.parameters;
  const tokens = M * MICRO * SEQ;
  const L = layers || (name === 'gpt2' ? 24 : 22);
  const dim = 2048;
  // Training FLOPs: 6 per parameter per token, plus attention's 12·L·T·d per token (forward and backward).
  const flops = 6 * params * tokens + 12 * L * SEQ * dim * tokens;
  const weights = planWeights(plan, { planFile });
  const run = await runWithWeights(plan, weights, { planFile, data: { kind: 'default' }, steps: steps + 1, optimizer: { kind: 'adamw', lr: 1e-4, weightDecay: 0.1 }, launchLists: true },
    (r) => log(`${name} cleave step ${r.step}: loss ${r.loss.toFixed(3)}`));
  const steady = run.stepMs.slice(2);
  const ms = steady.length ? steady.reduce((a, b) => a + b, 0) / steady.length : run.stepMs.at(-1)!;
  const row = (label: string, stepMs: number, peak: string): string[] => [name, label, stepMs.toFixed(1), (tokens / stepMs * 1000).toFixed(0), (flops / stepMs / 1e9).toFixed(1), peak];
  rows.push(row(`cleave (bf16, ${fused} fused attentions)`, ms, (run.peakBytes / 2 ** 30).toFixed(1)));
  log(`${name} cleave steps (ms): ${run.stepMs.map((x) => x.toFixed(0)).join(', ')}`);
  if (profile) {
    // Where the step goes, per op (every node synchronized and timed, one step after one warm-up).
    const { profileWithWeights } = await import('../runtime/launch/profile.js');
    const { byOp } = await profileWithWeights(plan, weights, { steps: 1, warmup: 1 });
    const total = byOp.reduce((a, b) => a + b.ms, 0);
    notes.push(`${name}: where a step's time goes (each node synchronized and timed, ${total.toFixed(0)} ms in all)\n` + table(['op', 'launches', 'ms', 'share'],
      byOp.slice(0, 24).map((x) => [x.op, String(x.launches), x.ms.toFixed(1), `${((100 * x.ms) / total).toFixed(1)}%`])));
  }
  if (name === 'gpt2' && withBuilder) {
    // The issue's yardstick: HF GPT-2 from its ONNX file against the GPT cleave's own builder makes at
    // the same shape (untied head there, tied in HF: the same FLOPs, one matrix fewer to update).
    const bg = benchGpt({ layers: L, dim, heads: 16, seq: SEQ, vocab: 50304, micro: MICRO });
    const bplan = compile({ model: 'gpt-bench', graph: bg, loss: { kind: 'cross-entropy' }, partitions: 1, microbatches: M, schedule: '1f1b', batch: M * MICRO, policy: 'bf16', device: 'h100' }).plan;
    const bfile = join(dir, 'builder.plan');
    writePlan(bfile, bplan);
    const br = await runWithWeights(bplan, randomWeights(bg), { planFile: bfile, data: { kind: 'default' }, steps: steps + 1, optimizer: { kind: 'adamw', lr: 1e-4, weightDecay: 0.1 }, launchLists: true },
      (r) => log(`builder GPT step ${r.step}: loss ${r.loss.toFixed(3)}`));
    const bs = br.stepMs.slice(2);
    const bms = bs.length ? bs.reduce((a, b) => a + b, 0) / bs.length : br.stepMs.at(-1)!;
    rows.push(row(`cleave, builder GPT of this shape`, bms, (br.peakBytes / 2 ** 30).toFixed(1)));
    notes.push(`HF GPT-2 step / builder GPT step: ${(ms / bms).toFixed(3)}`);
  }
  if (withTorch) {
    log(`${name}: PyTorch eager${withCompile ? ' and torch.compile' : ''}`);
    const t = py(['train', name, ...(withCompile ? [] : ['--no-compile'])], 1_500_000);
    for (const line of t.out.trim().split('\n').filter((l) => l.includes('|'))) {
      const [label, pms, mem] = line.split('|');
      rows.push(row(`PyTorch ${label}`, Number(pms), mem!));
    }
    if (!t.ok) rows.push([name, `PyTorch not run: ${t.err}`, '', '', '', '']);
  }
}
const { nativeCuda } = await import('../runtime/backends/cuda/native.js');
const info = nativeCuda()!.info()!;
console.log(`Hugging Face models from their torch.onnx export, one GPU; step = ${M} microbatches × ${MICRO} × ${SEQ} tokens`);
console.log(`card: ${info.name}, ${(info.memoryBytes / 2 ** 30).toFixed(0)} GiB\n`);
console.log(table(['model', 'runtime', 'step ms', 'tokens/s', 'TFLOP/s', 'peak GiB'], rows));
for (const n of notes) console.log(n);
