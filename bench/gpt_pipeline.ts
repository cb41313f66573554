// Pipeline-parallel training of the benchmark GPT (bench/gpt_model.ts: 24 layers, d 2048, seq 1024,
// bf16, AdamW) on 4 GPUs, p = 4, m = 8 microbatches of 4: every cleave schedule, and in the same run
// torch.distributed.pipelining on the same model split into the same stages (GPipe, 1F1B,
// Interleaved1F1B, ZBVZeroBubble; bench/torch_pipeline.py), plus each system's single-GPU step, so
// that pipeline efficiency = (single-GPU step ÷ 4) ÷ pipelined step is reported for both. Also
// cleave's predicted step time beside the measured one.
//
//   node dist/bench/gpt_pipeline.js [--gpus 4] [--dp 1] [--layers 24] [--dim 2048] [--heads 16] [--seq 1024] [--vocab 50304]
//                                   [--micro 4] [--microbatches 8] [--steps 3] [--schedules 1f1b,zbv] [--no-torch] [--no-cleave]
//                                   [--no-profile] [--dir DIR] [--memory-weight 0] [--active M] [--trace] [--cuda-graph]
// --dp D runs SMP's hybrid configurations: GPUs ÷ D pipeline ranks × D data-parallel replicas (cleave's
// plan with dp D; torch with DDP-style gradient averaging), each replica training on its own batch.
// Plans are compiled with this card's measured op times (cleave profile of the one-GPU plan) unless --no-profile;
// with --dir the profile is kept there and reused, so the cleave and torch halves can run as two commands
// (--no-torch, then --no-cleave: torch still cuts where cleave's plans cut). --trace writes each
// pipelined run's measured last step (Perfetto) to DIR/<schedule>.trace.json; --cuda-graph adds a row for
// each schedule run again with every rank's step as one CUDA graph. The partitioner's
// memory_weight is 0 here, not SMP's 0.8: every stage fits with room to spare (at most 21 GiB a
// rank), so time alone should set the cut, as a user tuning for speed would set it. With this
// card's measured op times the plans predict 4 to 8 ms shorter steps than at 0.2 (zbv 188 vs 197 ms).
// Likewise the zero-bubble schedules (zb-h1, zbv) run with SMP's active_microbatches at m (--active,
// default m) rather than p: with memory to spare, more forwards run ahead and more weight gradients
// wait to fill the gaps, as ZB-H2 trades memory for bubble (zbv predicted 162 → 153 ms, 22 → 35 GiB
// a rank). The peak memory column shows what that costs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from '../compiler/compile.js';
import { type MeasuredProfile, readMeasuredProfile } from '../compiler/cost/model.js';
import { type ScheduleName, SCHEDULES } from '../compiler/cost/memory.js';
import { launchProcesses } from '../runtime/launch/processes.js';
import { table } from '../src/core/util/format.js';
import { parameterStats } from '../src/core/ir/stats.js';
import { writePlan } from '../src/core/plan/io.js';
import type { Plan } from '../src/core/plan/types.js';
import { benchGpt } from './gpt_model.js';

const arg = (k: string, d: number): number => {
  const i = process.argv.indexOf(`--${k}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
const cfg = { layers: arg('layers', 24), dim: arg('dim', 2048), heads: arg('heads', 16), seq: arg('seq', 1024), vocab: arg('vocab', 50304), micro: arg('micro', 4), steps: arg('steps', 3), warmup: 2 };
const gpus = arg('gpus', 4), dp = arg('dp', 1), m = arg('microbatches', 8), memoryWeight = arg('memory-weight', 0), active = arg('active', m);
if (!Number.isInteger(gpus / dp) || gpus / dp < 1) throw new Error(`--dp ${dp} does not divide --gpus ${gpus}`);
const pp = gpus / dp;
const tracing = process.argv.includes('--trace');
const graphs = process.argv.includes('--cuda-graph');
const si = process.argv.indexOf('--schedules');
const ALL: readonly ScheduleName[] = SCHEDULES;
const schedules = si >= 0 ? (process.argv[si + 1]!.split(',') as ScheduleName[]) : ALL;
const withTorch = !process.argv.includes('--no-torch');
const withCleave = !process.argv.includes('--no-cleave');
const here = dirname(fileURLToPath(import.meta.url));
const log = (s: string): void => void process.stderr.write(`[${(performance.now() / 1000).toFixed(1)} s] ${s}\n`);

const card = spawnSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader'], { encoding: 'utf8' }).stdout?.trim().split('\n') ?? [];
if (card.length < gpus) {
  console.log(`this benchmark needs ${gpus} GPUs; nvidia-smi lists ${card.length}`);
  process.exit(0);
}
const device = /H200/.test(card[0]!) ? 'h200' : 'h100';
const di = process.argv.indexOf('--dir');
const dir = di >= 0 ? process.argv[di + 1]! : mkdtempSync(join(tmpdir(), 'cleave-pipeline-'));
mkdirSync(dir, { recursive: true });
const g = benchGpt(cfg);
const params = parameterStats(g).count;
/** Tokens of one replica's step; a configuration with dp replicas trains dp times as many. */
const tokens = m * cfg.micro * cfg.seq;
// Training FLOPs: 6 per parameter per token, plus attention's 12·L·T·d per token (fwd + bwd).
const flopsPerToken = 6 * params + 12 * cfg.layers * cfg.seq * cfg.dim;

interface Result { stepMs: number; peakBytes: number[]; loss: number; predictedMs?: number }

/** Where each stage after the first begins, as a layer index (what torch_pipeline.py's --split takes). */
const splits = new Map<string, string>();
function layerSplit(plan: Plan): string {
  const first = plan.stages.slice(1).map((st) => Math.min(...st.forward.map((i) => Number(/^\/h\.(\d+)\//.exec(plan.nodes[i]!.name)?.[1] ?? Infinity))));
  return first.map((k) => (Number.isFinite(k) ? k : cfg.layers)).join(',');
}

/** Op signature → measured ms on this card (`cleave profile` of the one-GPU plan), once measured. */
let measured: MeasuredProfile | undefined;

function planFor(name: string, partitions: number, schedule: ScheduleName, replicas = 1): { plan: Plan; planFile: string } {
  const v = schedule === 'zbv' || schedule === 'interleaved-1f1b' ? 2 : 1;
  const { plan } = compile({ model: 'gpt-bench', graph: benchGpt(cfg), loss: { kind: 'cross-entropy' }, partitions, dp: replicas, virtualStages: v, microbatches: m, schedule, batch: m * cfg.micro, policy: 'bf16', device, measured, memoryWeight,
    activeMicrobatches: schedule === 'zb-h1' || schedule === 'zbv' ? active : undefined });
  const planFile = join(dir, `${name}.plan`);
  writePlan(planFile, plan);
  return { plan, planFile };
}

/** One cleave configuration: compile, then one process per rank (rank 0's JSON line is the result). */
async function cleave(name: string, partitions: number, schedule: ScheduleName, replicas = 1, cudaGraph = false): Promise<Result> {
  const { plan, planFile } = planFor(name, partitions, schedule, replicas);
  splits.set(schedule, layerSplit(plan));
  let out = '';
  await launchProcesses({
    nprocs: plan.world.size, masterPort: 29600, command: process.execPath, args: [join(here, 'gpt_pipeline_rank.js'), planFile, JSON.stringify({ ...cfg, cudaGraph, trace: tracing && !cudaGraph && plan.world.size > 1 ? join(dir, `${name}.trace.json`) : undefined })],
    logDir: join(dir, `logs-${name}`), env: plan.world.size > 1 ? { NCCL_NVLS_ENABLE: '0', CUDA_DEVICE_MAX_CONNECTIONS: '32', CUDA_MODULE_LOADING: process.env['CUDA_MODULE_LOADING'] ?? 'LAZY' } : {}, echo: (c) => void (out += c),
  });
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${name}: no result from rank 0:\n${out}`);
  return { ...(JSON.parse(line) as Result), predictedMs: plan.prediction.stepMs };
}

/** One torch.distributed.pipelining run (bench/torch_pipeline.py under torchrun), cut where cleave's plan of the same schedule cut. */
function torch(schedule: string, nprocs: number, replicas = 1): Result | string {
  const script = join(here, '..', '..', 'bench', 'torch_pipeline.py');
  const split = nprocs / replicas > 1 && splits.get(schedule) ? ['--split', splits.get(schedule)!] : [];
  if (replicas > 1) split.push('--dp', String(replicas));
  const r = spawnSync('torchrun', ['--nproc-per-node', String(nprocs), '--master-port', '29700', script, '--schedule', schedule, ...split, '--layers', String(cfg.layers), '--dim', String(cfg.dim),
    '--heads', String(cfg.heads), '--seq', String(cfg.seq), '--vocab', String(cfg.vocab), '--micro', String(cfg.micro), '--microbatches', String(m), '--steps', String(cfg.steps), '--warmup', String(cfg.warmup)],
  { encoding: 'utf8', timeout: 900_000, env: { ...process.env, NCCL_NVLS_ENABLE: '0' } });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('{'));
  if (!line) return `not run: ${(r.stderr || r.error?.message || '').trim().split('\n').at(-1)}`;
  const j = JSON.parse(line) as { step_ms?: number; peak_gib?: number[]; loss?: number; error?: string };
  if (j.error || j.step_ms === undefined) return `failed: ${j.error}`;
  return { stepMs: j.step_ms, peakBytes: (j.peak_gib ?? []).map((x) => x * 2 ** 30), loss: j.loss ?? NaN };
}

const rows: string[][] = [];
/** `single`: the system's one-GPU step, for the efficiency; `replicas`: data-parallel replicas of the row's run. */
const row = (system: string, schedule: string, r: Result | string, single?: number, replicas = 1): void => {
  if (typeof r === 'string') {
    log(`${system} ${schedule}: ${r}`);
    return void rows.push([system, schedule, r, '', '', '', '', '']);
  }
  // The run trains `replicas` one-GPU steps' worth of tokens on all the GPUs.
  const eff = single ? `${((100 * single * replicas) / gpus / r.stepMs).toFixed(1)}%` : '—';
  const n = replicas * tokens, used = single ? gpus : 1;
  const pred = r.predictedMs ? `${r.predictedMs.toFixed(0)} (${((100 * (r.stepMs - r.predictedMs)) / r.predictedMs).toFixed(0)}%)` : '—';
  rows.push([system, schedule, r.stepMs.toFixed(1), (n / r.stepMs * 1000).toFixed(0), ((n * flopsPerToken) / r.stepMs / 1e9 / used).toFixed(1), eff,
    (Math.max(...r.peakBytes) / 2 ** 30).toFixed(1), pred]);
  log(`${system} ${schedule}: ${rows.at(-1)!.slice(2).join(' | ')}`);
};

// The partitioner and the predictions work from this card's measured op times, as a user would
// (cleave profile on the one-GPU plan, then compile with --profile).
if (!process.argv.includes('--no-profile')) {
  const file = join(dir, 'profile.json');
  if (existsSync(file)) log(`cleave: op times from ${file}`);
  else {
    log('cleave: measuring each op on one GPU (cleave profile)');
    const { planFile } = planFor('profiled', 1, '1f1b');
    spawnSync(process.execPath, [join(here, 'gpt_pipeline_rank.js'), planFile, JSON.stringify(cfg), '--profile', file], { encoding: 'utf8', stdio: ['ignore', 'inherit', 'inherit'] });
  }
  if (existsSync(file)) measured = readMeasuredProfile(file);
  else log('profiling failed: plans use the analytic cost model');
}
if (withCleave) {
  log(`cleave: single GPU (${m} microbatches of ${cfg.micro})`);
  const cleaveSingle = await cleave('single', 1, '1f1b');
  row('cleave', 'one GPU', cleaveSingle);
  for (const s of schedules) {
    log(`cleave: ${s} on ${gpus} GPUs (pp ${pp} × dp ${dp})`);
    try {
      row('cleave', s, await cleave(s, pp, s, dp), cleaveSingle.stepMs, dp);
    } catch (e) {
      row('cleave', s, `failed: ${(e as Error).message.split('\n')[0]}`);
    }
    if (!graphs) continue;
    try {
      row('cleave', `${s} (cuda graph)`, await cleave(`${s}-graph`, pp, s, dp, true), cleaveSingle.stepMs, dp);
    } catch (e) {
      row('cleave', `${s} (cuda graph)`, `failed: ${(e as Error).message.split('\n')[0]}`);
    }
  }
} else for (const s of schedules) splits.set(s, layerSplit(planFor(s, pp, s, dp).plan));
if (withTorch) {
  log('torch: single GPU (one stage)');
  const torchSingle = torch('gpipe', 1);
  row('torch.distributed.pipelining', 'one GPU', torchSingle);
  for (const s of ['gpipe', '1f1b', 'interleaved-1f1b', 'zbv']) {
    log(`torch: ${s} on ${gpus} GPUs (pp ${pp} × dp ${dp})`);
    row('torch.distributed.pipelining', s, torch(s, gpus, dp), typeof torchSingle === 'string' ? undefined : torchSingle.stepMs, dp);
  }
}
console.log(`GPT ${cfg.layers} layers, d ${cfg.dim}, ${cfg.heads} heads, seq ${cfg.seq}, vocab ${cfg.vocab}: ${(params / 1e9).toFixed(2)} B parameters; step = ${m} microbatches × ${cfg.micro} = ${tokens} tokens${dp > 1 ? ` per replica, pp ${pp} × dp ${dp}` : ''}`);
console.log(`cards: ${gpus} × ${card[0]}; cleave's zb-h1 and zbv with active_microbatches ${active}\n`);
console.log(table(['system', 'schedule', 'step ms', 'tokens/s', 'TFLOP/s per GPU', 'efficiency', 'peak GiB (max rank)', 'predicted ms (error)'], rows));
console.log('\nefficiency = (the system\'s one-GPU step ÷ GPUs) ÷ pipelined step; predicted = cleave\'s plan (cost model) for the same run');
