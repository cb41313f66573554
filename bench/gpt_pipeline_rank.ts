// One process of bench/gpt_pipeline.ts: trains the benchmark GPT with a compiled plan as one rank
// (the launcher's variables say which), its weights generated here from the shared stream, and
// rank 0 prints the result as one JSON line. A one-rank plan runs in this process without NCCL.
//
//   node dist/bench/gpt_pipeline_rank.js PLAN CONFIG_JSON [--profile OUT.json]   (started by gpt_pipeline.ts)
// With --profile (a one-rank plan): writes each op signature's measured time instead.
import { cudaAvailable } from '../runtime/backends/cuda/native.js';
import { runWithWeights } from '../runtime/launch/cuda.js';
import { cudaEnvironment, runCudaRank } from '../runtime/launch/cuda_rank.js';
import { worldFromEnv } from '../runtime/launch/world.js';
import { readPlan } from '../src/core/plan/io.js';
import { type GptConfig, benchGpt, randomWeights } from './gpt_model.js';

const [planFile, cfgJson, flag, profileFile] = process.argv.slice(2);
if (!planFile || !cfgJson) throw new Error('usage: gpt_pipeline_rank.js PLAN CONFIG_JSON [--profile OUT.json]');
const cfg = JSON.parse(cfgJson) as GptConfig & { steps: number; warmup: number; trace?: string; cudaGraph?: boolean };
const plan = readPlan(planFile);
const world = worldFromEnv(process.env);
// A rank's CUDA settings before CUDA starts (cudaAvailable starts it).
if (world && plan.world.size > 1) cudaEnvironment(plan, world.rank);
if (!cudaAvailable()) throw new Error('no CUDA device');
const g = benchGpt(cfg);
const me = world ? plan.ranks[world.rank]! : plan.ranks[0]!;
// Only this rank's parameters are kept (the stream still runs over all of them).
const mine = new Set(plan.stages.filter((s) => s.ppRank === me.ppRank).flatMap((s) => [...s.forward, ...s.backwardB, ...s.backwardW]).flatMap((i) => plan.nodes[i]!.inputs)
  .filter((v) => v >= 0).map((v) => plan.values[v]!.name));
const weights = () => randomWeights(g, (name) => mine.has(name));
if (flag === '--profile') {
  // Each op signature's time on this GPU, for the cost model the pipeline plans are compiled with.
  if (!profileFile) throw new Error('--profile needs a file');
  const { profileWithWeights, writeMeasuredProfile } = await import('../runtime/launch/profile.js');
  const { profile } = await profileWithWeights(plan, weights(), { steps: 1, warmup: 1 });
  writeMeasuredProfile(profileFile, profile);
  process.exit(0);
}
const o = { planFile, data: { kind: 'default' as const }, steps: cfg.warmup + cfg.steps, optimizer: { kind: 'adamw' as const, lr: 1e-4, weightDecay: 0.1 }, timeoutSeconds: 600, trace: cfg.trace, cudaGraph: !!cfg.cudaGraph };
const r = plan.world.size === 1 || !world
  ? await runWithWeights(plan, weights(), o).then((x) => ({ ...x, peakBytesByRank: [x.peakBytes] }))
  : await runCudaRank(o, world, undefined, weights);
if (!world || world.rank === 0) {
  const timed = r.stepMs.slice(cfg.warmup);
  const ms = timed.reduce((a, b) => a + b, 0) / timed.length;
  process.stdout.write(JSON.stringify({ stepMs: ms, steps: r.stepMs, peakBytes: r.peakBytesByRank, loss: r.steps.at(-1)!.loss }) + '\n');
}
