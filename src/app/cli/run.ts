import type { Command } from 'commander';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { readManifest } from '../../../runtime/checkpoint/checkpoint.js';
import { checkResume, resolveCheckpoint } from '../../../runtime/checkpoint/resume.js';
import { runPlanCpu } from '../../../runtime/launch/cpu.js';
import { runPlanCuda } from '../../../runtime/launch/cuda.js';
import { runCudaRank } from '../../../runtime/launch/cuda_rank.js';
import { launchProcesses } from '../../../runtime/launch/processes.js';
import { worldFromEnv } from '../../../runtime/launch/world.js';
import { nativeCuda } from '../../../runtime/backends/cuda/native.js';
import { PROFILE_NAMES } from '../../../compiler/cost/profiles.js';
import { type TraceDevice, deviceNote } from '../../core/plan/measured.js';
import type { StepReport } from '../../../runtime/launch/cpu.js';
import type { DataOptions, RunOptions } from '../../../runtime/launch/options.js';
import { optimizerConfig } from '../../../runtime/optim/optimizer.js';
import { CleaveError } from '../../core/errors.js';
import { checkPlan } from '../../core/plan/check.js';
import { planModelPath, readPlan } from '../../core/plan/io.js';
import { describeOptimizer } from '../../core/plan/optimizer.js';
import type { Plan } from '../../core/plan/types.js';
import { dataFlags } from './data_flags.js';
import { numberFlag, positiveInt } from './options.js';
import { type OptimizerFlags, optimizerForRun, optimizerOptions } from './optimizer_flags.js';
import { checkOutputDir, checkOutputFile } from './paths.js';
import { Progress } from './progress.js';
import { onInterrupt } from './signals.js';
import { intFlag } from './train.js';

interface RunFlags extends OptimizerFlags {
  backend: string; cudaGraph?: boolean; launchLists?: boolean; lossScale?: string; trace?: string; weights?: string; resume?: string; data?: string; tokens?: string; steps: number;
  saveEvery?: number; checkpointDir?: string; seed?: string; timeout: number; json?: boolean; gpus?: number; logDir?: string;
}

/** What the plan's dtype policy means on the backend that runs it. */
function precision(plan: Plan, backend: string): string {
  const policy = plan.model.dtypePolicy;
  if (backend === 'cpu') return policy === 'fp32' ? 'float32' : `float32 (the plan's ${policy} mixed precision applies on --backend cuda; the CPU backend computes in float32)`;
  return policy === 'bf16' ? 'bfloat16 compute, float32 master weights' : policy === 'fp16' ? 'float16 compute with dynamic loss scaling, float32 master weights' : 'float32';
}

/**
 * A plan costed for one device and run on another predicts the other's times: say so, and how to
 * compile for this one. The GPU is named as its driver names it (a CUDA run on a host without one
 * fails later, with its own message).
 */
function runDeviceNote(plan: Plan, backend: string): string | undefined {
  const gpu = backend === 'cuda' ? nativeCuda()?.info()?.name : undefined;
  if (backend === 'cuda' && !gpu) return undefined;
  const ranOn: TraceDevice = backend === 'cpu' ? { backend: 'cpu', device: 'cpu' } : { backend: 'cuda', device: gpu! };
  return deviceNote(plan, ranOn, PROFILE_NAMES, 'this run is on');
}

/**
 * The most ranks a CPU run starts: each is a worker thread with its own JavaScript heap (tens of
 * megabytes before any tensor), so thousands would take the host's memory before the first step.
 */
const CPU_MAX_RANKS = 256;

/** Flags that make sense only together, or only on one backend, are refused before anything runs. */
function checkFlags(o: RunFlags, plan: Plan, planFile: string): void {
  if (o.backend !== 'cpu' && o.backend !== 'cuda') throw new CleaveError(`--backend must be cpu or cuda; got '${o.backend}'`);
  if (o.cudaGraph && o.backend !== 'cuda') throw new CleaveError('--cuda-graph needs --backend cuda');
  if (o.launchLists === false && o.backend !== 'cuda') throw new CleaveError('--no-launch-lists needs --backend cuda');
  if (o.lossScale !== undefined && o.backend !== 'cuda') throw new CleaveError('--loss-scale needs --backend cuda (and an fp16 plan)');
  if (o.lossScale !== undefined && plan.model.dtypePolicy !== 'fp16') throw new CleaveError(`--loss-scale scales float16 gradients; ${planFile} computes in ${plan.model.dtypePolicy} (compile with --dtype fp16 for loss scaling)`);
  if (o.weights && o.resume) throw new CleaveError('give --weights or --resume, not both');
  if (o.saveEvery && !o.checkpointDir) throw new CleaveError('--save-every needs --checkpoint-dir');
  if (o.checkpointDir && !o.saveEvery) throw new CleaveError('--checkpoint-dir needs --save-every K: how many steps between checkpoints');
  if (o.saveEvery && o.saveEvery > o.steps) throw new CleaveError(`--save-every ${o.saveEvery} is more than --steps ${o.steps}: no checkpoint would be written`);
  if (o.gpus === undefined && o.logDir) throw new CleaveError('--log-dir goes with --gpus');
  if (o.backend === 'cpu' && plan.world.size > CPU_MAX_RANKS) {
    throw new CleaveError(`${planFile} has ${plan.world.size} ranks; the cpu backend runs each as a thread of this process, at most ${CPU_MAX_RANKS} (run it with --backend cuda, one process per GPU)`);
  }
  checkOutputFile('--trace', o.trace);
  checkOutputDir('--checkpoint-dir', o.checkpointDir);
  checkOutputDir('--log-dir', o.logDir);
}

export function registerRun(program: Command): void {
  const cmd = program
    .command('run')
    .description('run a compiled plan: one rank per worker thread (CPU backend), or on GPUs (--backend cuda; one process per GPU for multi-rank plans)')
    .argument('<plan>', 'plan file from cleave compile')
    .option('--backend <name>', 'cpu (worker threads), or cuda (GPUs)', 'cpu')
    .option('--weights <model.onnx>', 'initial weights (default: the model the plan was compiled from)')
    .option('--resume <checkpoint>', 'continue from a checkpoint: a step-N folder, or the --checkpoint-dir holding them (its newest complete step); any split, schedule or dp degree of the same model')
    .option('--data <path>', 'a .bin token file or a folder of NAME.npy arrays; default: the bundled task')
    .option('--tokens <type>', 'token type of a .bin file: uint16 (default) or int32')
    .option('--steps <n>', 'total steps (a resumed run continues to this count)', positiveInt('--steps'), 20)
    .option('--save-every <k>', 'write a checkpoint every k steps (with --checkpoint-dir)', positiveInt('--save-every'))
    .option('--checkpoint-dir <dir>', 'where checkpoints go (step-N folders; with --save-every)');
  optimizerOptions(cmd, 'default: what the plan was compiled with')
    .option('--seed <n>', 'data seed (each data-parallel replica draws its own shard; default 0)')
    .option('--timeout <s>', 'seconds a rank may wait for a message (CPU ranks: or go without progress in a step) before the run stops', positiveInt('--timeout'), 60)
    .option('--gpus <n>', 'cuda backend, multi-rank plans: start one process per GPU of this host (other hosts: torchrun, Slurm or mpirun variables)', positiveInt('--gpus'))
    .option('--log-dir <dir>', 'with --gpus: where each rank writes rank-K.log (default cleave-logs/<time>)')
    .option('--cuda-graph', 'cuda backend: capture the step as one CUDA graph after a first eager step, then replay it')
    .option('--no-launch-lists', 'cuda backend: enqueue every node from JavaScript each step instead of replaying recorded launch lists')
    .option('--loss-scale <x>', 'cuda backend, fp16 plans: initial loss scale (default 32768; halves on overflow, doubles after 2000 clean steps)')
    .option('--trace <file>', 'write the last step\'s measured timeline, every rank on one clock (Perfetto / Chrome trace; cleave plan print --measured reads it); GPU ranks are timed with CUDA events')
    .option('--json', 'one JSON object per step, then a summary')
    .action(async (planFile: string, o: RunFlags) => {
      const plan = readPlan(planFile);
      checkPlan(plan, planFile);
      checkFlags(o, plan, planFile);
      const { config: opt, changes } = optimizerForRun(plan.model.optimizerConfig, plan.model.optimizer, o);
      const data = dataFlags(o);
      const seed = intFlag('--seed', o.seed) ?? 0;
      if (o.gpus !== undefined) return launchGpus(planFile, plan.world.size, o);
      // A process of a multi-GPU run: its place comes from the launcher's variables.
      const world = o.backend === 'cuda' && plan.world.size > 1 ? worldFromEnv(process.env) : undefined;
      if (o.backend === 'cuda' && plan.world.size > 1 && !world) {
        throw new CleaveError(`${planFile} has ${plan.world.size} ranks: run it with --gpus ${plan.world.size} on one host, or start one process per GPU with torchrun, Slurm or mpirun`);
      }
      const quiet = world !== undefined && world.rank !== 0;
      if (!plan.checksum && !quiet) process.stderr.write(`note: ${planFile} is a version ${plan.version} plan, written before plans carried a checksum: its bytes cannot be verified (recompile it to get one)\n`);
      let start = 0;
      let resume: string | undefined, resumeNote: string | undefined;
      if (o.resume) {
        // A --checkpoint-dir resumes from its newest complete step; any split of the same model can
        // take it (each rank gathers its parameters by name), which checkResume makes sure of now.
        const found = resolveCheckpoint(o.resume);
        checkResume(found.dir, plan);
        resume = found.dir;
        resumeNote = found.note;
        const m = readManifest(found.dir);
        if (resolve(m.plan) !== resolve(planFile) && !quiet) process.stderr.write(`note: ${found.dir} was written with plan ${m.plan}\n`);
        start = m.step;
        if (start >= o.steps) throw new CleaveError(`${found.dir} is at step ${start} already; ask for more --steps`);
      }
      // Where the run's weights come from, said at the start: the plan's own model (each rank reads
      // its parameters' byte ranges there), or --weights (read by initializer name).
      const weights = o.resume ? undefined : (o.weights ?? planModelPath(plan, planFile));
      const dataOptions: DataOptions = data.path ? { kind: 'path', path: data.path, tokenType: data.tokenType } : { kind: 'default' };
      const w = plan.world;
      const note = runDeviceNote(plan, o.backend);
      if (!quiet) {
        const start0 = { plan: planFile, backend: o.backend, ranks: w.size, pp: w.pp, dp: w.dp, schedule: plan.schedule.name, microbatches: plan.schedule.microbatches, microbatchSize: plan.model.microbatchSize, optimizer: opt, overrides: changes, precision: precision(plan, o.backend), weights: weights ?? null, resume: resume ?? null, resumeNote: resumeNote ?? null, fromStep: start, note: note ?? null };
        if (o.json) process.stdout.write(JSON.stringify({ start: start0 }) + '\n');
        else {
          process.stdout.write(`running ${planFile}: ${w.size} ranks (${w.pp} pipeline × ${w.dp} data parallel), ${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}, ${o.backend} backend${start ? `, resuming at step ${start}` : ''}\n`);
          process.stdout.write(`training: ${describeOptimizer(opt)}${changes.length ? '' : ' as the plan says'}; ${precision(plan, o.backend)}\n`);
          for (const c of changes) process.stdout.write(`  ${c}: applied\n`);
          if (note) process.stdout.write(`note: ${note}\n`);
          if (resumeNote) process.stdout.write(`note: ${resumeNote}\n`);
        }
      }
      const progress = new Progress(o.steps, 'samples', !!o.json || quiet, start);
      let samples = 0, reached = start;
      const losses: number[] = [];
      const stopReport = onInterrupt((signal) => {
        progress.stop();
        if (quiet) return;
        const last = o.checkpointDir ? lastCheckpoint(o.checkpointDir) : undefined;
        const msg = `${signal === 'SIGINT' ? 'interrupted' : `stopped by ${signal}`} at step ${reached} of ${o.steps}; ${last ? `the last complete checkpoint is ${last} (continue with --resume ${last})` : o.checkpointDir ? `no complete checkpoint in ${o.checkpointDir}` : 'no checkpoint was asked for (--save-every K --checkpoint-dir DIR)'}`;
        if (o.json) process.stdout.write(JSON.stringify({ interrupted: { signal, step: reached, checkpoint: last ?? null } }) + '\n');
        process.stderr.write(`\ncleave: ${msg}\n`);
      });
      const run = world ? (x: RunOptions, f: (r: StepReport) => void) => runCudaRank(x, world, f) : o.backend === 'cuda' ? runPlanCuda : runPlanCpu;
      const result = await run({
        planFile, weights: o.resume ? undefined : o.weights, resume, data: dataOptions, steps: o.steps, optimizer: optimizerConfig(opt), clip: opt.clip || undefined,
        failAt: failAtFromEnv(),
        seed, saveEvery: o.saveEvery, checkpointDir: o.checkpointDir, timeoutSeconds: o.timeout, cudaGraph: !!o.cudaGraph, launchLists: o.launchLists !== false, lossScale: numberFlag('--loss-scale', o.lossScale, 1), trace: o.trace,
      }, (r) => {
        samples += r.samples;
        reached = r.step;
        losses.push(r.loss);
        if (quiet) return;
        if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
        progress.update(r.step, samples, `loss ${r.loss.toFixed(4)}`);
      }).finally(stopReport);
      const secs = progress.stop();
      if (quiet) return;
      const s = result.steps;
      const summary = { steps: s.length, fromStep: start, toStep: reached, firstLoss: s[0]?.loss ?? null, finalLoss: s.at(-1)?.loss ?? null, seconds: secs, samplesPerSecond: samples / secs, checkpoints: result.checkpoints, trace: o.trace ?? null };
      if (o.json) {
        process.stdout.write(JSON.stringify({ summary }) + '\n');
        return;
      }
      process.stdout.write(`loss ${s[0]?.loss.toFixed(4)} → ${s.at(-1)?.loss.toFixed(4)} in ${s.length} steps, ${secs.toFixed(1)} s (${(samples / secs).toFixed(1)} samples/s)\n`);
      for (const c of result.checkpoints) process.stdout.write(`checkpoint ${c}\n`);
      if (o.trace) process.stdout.write(`wrote the last step's measured timeline to ${o.trace} (ui.perfetto.dev; cleave plan print ${planFile} --measured ${o.trace})\n`);
    });
}

/** The newest complete checkpoint under a checkpoint folder, if any. */
function lastCheckpoint(dir: string): string | undefined {
  try {
    return resolveCheckpoint(dir).dir;
  } catch {
    return undefined;
  }
}

/**
 * `--gpus N`: this process launches N processes on this host, each running the same command as
 * one rank (torchrun's variables; each takes the GPU of its local rank), every rank logging to its
 * own file and rank 0 shown here. One that fails stops the others (SIGTERM, then SIGKILL), and so
 * does an interrupt of this process.
 */
async function launchGpus(planFile: string, ranks: number, o: RunFlags): Promise<void> {
  if (o.backend !== 'cuda') throw new CleaveError('--gpus needs --backend cuda');
  if (o.gpus !== ranks) throw new CleaveError(`${planFile} has ${ranks} ranks; --gpus ${o.gpus} starts ${o.gpus} processes (one host runs one rank per GPU)`);
  const args = process.argv.slice(1).filter((a, i, all) => a !== '--gpus' && !a.startsWith('--gpus=') && all[i - 1] !== '--gpus' && a !== '--log-dir' && !a.startsWith('--log-dir=') && all[i - 1] !== '--log-dir');
  const logDir = o.logDir ?? join('cleave-logs', new Date().toISOString().replace(/[:.]/g, '-'));
  const port = Number(process.env['MASTER_PORT'] ?? (await freePort()));
  // What each rank's cudaEnvironment asks for, set before the ranks start in case CUDA loads early.
  const env = { CUDA_DEVICE_MAX_CONNECTIONS: process.env['CUDA_DEVICE_MAX_CONNECTIONS'] ?? '32', CUDA_MODULE_LOADING: process.env['CUDA_MODULE_LOADING'] ?? 'LAZY' };
  const abort = new AbortController();
  let stopped: Promise<unknown> | undefined;
  const stop = onInterrupt(async () => {
    abort.abort();
    await stopped;
  });
  stopped = launchProcesses({ requireFinished: true, nprocs: ranks, masterPort: port, command: process.execPath, args, logDir, env, signal: abort.signal }).catch((e: unknown) => e);
  const outcome = await stopped.finally(stop);
  if (outcome instanceof Error) throw outcome;
  if (!o.json) process.stdout.write(`rank logs: ${logDir}\n`);
}

/** A TCP port nothing listens on now (the rendezvous' rank 0 takes it). */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolvePort(a.port) : reject(new CleaveError('no free TCP port for the rendezvous'))));
    });
  });
}

/**
 * CLEAVE_FAIL_AT=rank:step:instruction makes that rank fail at that instruction of that step (with
 * `:hang`, spin there instead, for the watchdog): how the fault tests stop one rank of a run.
 */
function failAtFromEnv(): RunOptions['failAt'] {
  const v = process.env['CLEAVE_FAIL_AT'];
  if (!v) return undefined;
  const m = /^(\d+):(\d+):(\d+)(:hang)?$/.exec(v);
  if (!m) throw new CleaveError(`CLEAVE_FAIL_AT=${v} is not rank:step:instruction[:hang]`);
  return { rank: Number(m[1]), step: Number(m[2]), instruction: Number(m[3]), ...(m[4] ? { hang: true } : {}) };
}
