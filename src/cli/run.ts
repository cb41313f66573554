import type { Command } from 'commander';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { readManifest } from '../../runtime/checkpoint/checkpoint.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { runPlanCuda } from '../../runtime/launch/cuda.js';
import { runCudaRank } from '../../runtime/launch/cuda_rank.js';
import { launchProcesses } from '../../runtime/launch/processes.js';
import { worldFromEnv } from '../../runtime/launch/world.js';
import type { StepReport } from '../../runtime/launch/cpu.js';
import type { DataOptions, RunOptions } from '../../runtime/launch/options.js';
import { OPTIMIZER_KINDS, type OptimizerConfig } from '../../runtime/optim/optimizer.js';
import { CleaveError } from '../errors.js';
import { readPlan } from '../plan/io.js';
import { numberFlag, positiveInt } from './options.js';
import { Progress } from './progress.js';

interface RunFlags {
  backend: string; cudaGraph?: boolean; launchLists?: boolean; lossScale?: string; trace?: string; weights?: string; resume?: string; data?: string; tokens: string; steps: number;
  saveEvery?: number; checkpointDir?: string; optimizer: string; lr: string; weightDecay?: string; momentum?: string;
  clip?: string; seed: string; timeout: number; json?: boolean; gpus?: number; logDir?: string;
}

const num = (flag: string, v: string | undefined): number | undefined => numberFlag(flag, v, 0);

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run a compiled plan: one rank per worker thread (CPU backend), or on GPUs (--backend cuda; one process per GPU for multi-rank plans)')
    .argument('<plan>', 'plan file from cleave compile')
    .option('--backend <name>', 'cpu (worker threads), or cuda (GPUs)', 'cpu')
    .option('--weights <model.onnx>', 'initial weights (default: the model the plan was compiled from)')
    .option('--resume <checkpoint>', 'continue from a checkpoint folder (step-N with manifest.json)')
    .option('--data <path>', 'a .bin token file or a folder of NAME.npy arrays; default: the bundled task')
    .option('--tokens <type>', 'token type of a .bin file: uint16 or int32', 'uint16')
    .option('--steps <n>', 'total steps (a resumed run continues to this count)', positiveInt('--steps'), 20)
    .option('--save-every <k>', 'write a checkpoint every k steps', positiveInt('--save-every'))
    .option('--checkpoint-dir <dir>', 'where checkpoints go (step-N folders)')
    .option('--optimizer <kind>', OPTIMIZER_KINDS.join(', '), 'adamw')
    .option('--lr <x>', 'learning rate', '3e-3')
    .option('--weight-decay <x>', 'weight decay')
    .option('--momentum <x>', 'SGD momentum')
    .option('--clip <x>', 'clip the global gradient norm (across all stages)')
    .option('--seed <n>', 'data seed (each data-parallel replica draws its own shard)', '0')
    .option('--timeout <s>', 'seconds a rank waits for a message before the run stops', positiveInt('--timeout'), 60)
    .option('--gpus <n>', 'cuda backend, multi-rank plans: start one process per GPU of this host (other hosts: torchrun, Slurm or mpirun variables)', positiveInt('--gpus'))
    .option('--log-dir <dir>', 'with --gpus: where each rank writes rank-K.log (default cleave-logs/<time>)')
    .option('--cuda-graph', 'cuda backend: capture the step as one CUDA graph after a first eager step, then replay it')
    .option('--no-launch-lists', 'cuda backend: enqueue every node from JavaScript each step instead of replaying recorded launch lists')
    .option('--loss-scale <x>', 'cuda backend, fp16 plans: initial loss scale (default 32768; halves on overflow, doubles after 2000 clean steps)')
    .option('--trace <file>', 'write the last step\'s measured timeline, every rank on one clock (Perfetto / Chrome trace; cleave plan print --measured reads it); GPU ranks are timed with CUDA events')
    .option('--json', 'one JSON object per step')
    .action(async (planFile: string, o: RunFlags) => {
      if (o.cudaGraph && o.backend !== 'cuda') throw new CleaveError('--cuda-graph needs --backend cuda');
      if (o.launchLists === false && o.backend !== 'cuda') throw new CleaveError('--no-launch-lists needs --backend cuda');
      if (o.lossScale !== undefined && o.backend !== 'cuda') throw new CleaveError('--loss-scale needs --backend cuda (and an fp16 plan)');
      if (o.backend !== 'cpu' && o.backend !== 'cuda') throw new CleaveError(`--backend must be cpu or cuda; got '${o.backend}'`);
      if (o.weights && o.resume) throw new CleaveError('give --weights or --resume, not both');
      if (o.saveEvery && !o.checkpointDir) throw new CleaveError('--save-every needs --checkpoint-dir');
      if (!(OPTIMIZER_KINDS as readonly string[]).includes(o.optimizer)) throw new CleaveError(`--optimizer must be one of ${OPTIMIZER_KINDS.join(', ')}; got '${o.optimizer}'`);
      const plan = readPlan(planFile);
      if (o.gpus !== undefined) return launchGpus(planFile, plan.world.size, o);
      if (o.logDir) throw new CleaveError('--log-dir goes with --gpus');
      // A process of a multi-GPU run: its place comes from the launcher's variables.
      const world = o.backend === 'cuda' && plan.world.size > 1 ? worldFromEnv(process.env) : undefined;
      if (o.backend === 'cuda' && plan.world.size > 1 && !world) {
        throw new CleaveError(`${planFile} has ${plan.world.size} ranks: run it with --gpus ${plan.world.size} on one host, or start one process per GPU with torchrun, Slurm or mpirun`);
      }
      const quiet = world !== undefined && world.rank !== 0;
      let start = 0;
      if (o.resume) {
        const m = readManifest(o.resume);
        if (m.world !== plan.world.size) throw new CleaveError(`${o.resume}: written by ${m.world} ranks; this plan has ${plan.world.size}`);
        if (resolve(m.plan) !== resolve(planFile)) process.stderr.write(`warning: ${o.resume} was written with plan ${m.plan}\n`);
        start = m.step;
        if (start >= o.steps) throw new CleaveError(`${o.resume} is at step ${start} already; ask for more --steps`);
      }
      const lr = num('--lr', o.lr)!;
      const optimizer: OptimizerConfig = o.optimizer === 'sgd'
        ? { kind: 'sgd', lr, momentum: num('--momentum', o.momentum), weightDecay: num('--weight-decay', o.weightDecay) }
        : { kind: o.optimizer as 'adam' | 'adamw', lr, weightDecay: num('--weight-decay', o.weightDecay) };
      const data: DataOptions = o.data ? { kind: 'path', path: o.data, tokenType: o.tokens as 'uint16' | 'int32' } : { kind: 'default' };
      const w = plan.world;
      if (!o.json && !quiet) process.stdout.write(`running ${planFile}: ${w.size} ranks (${w.pp} pipeline × ${w.dp} data parallel), ${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}, ${o.backend} backend${start ? `, resuming at step ${start}` : ''}\n`);
      const progress = new Progress(o.steps, 'samples', !!o.json || quiet, start);
      let samples = 0;
      const run = world ? (x: RunOptions, f: (r: StepReport) => void) => runCudaRank(x, world, f) : o.backend === 'cuda' ? runPlanCuda : runPlanCpu;
      const result = await run({
        planFile, weights: o.weights, resume: o.resume, data, steps: o.steps, optimizer, clip: num('--clip', o.clip),
        failAt: failAtFromEnv(),
        seed: Number(o.seed), saveEvery: o.saveEvery, checkpointDir: o.checkpointDir, timeoutSeconds: o.timeout, cudaGraph: !!o.cudaGraph, launchLists: o.launchLists !== false, lossScale: num('--loss-scale', o.lossScale), trace: o.trace,
      }, (r) => {
        samples += r.samples;
        if (quiet) return;
        if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
        progress.update(r.step, samples, `loss ${r.loss.toFixed(4)}`);
      });
      const secs = progress.stop();
      if (!o.json && !quiet) {
        const s = result.steps;
        process.stdout.write(`loss ${s[0]?.loss.toFixed(4)} → ${s.at(-1)?.loss.toFixed(4)} in ${s.length} steps, ${secs.toFixed(1)} s (${(samples / secs).toFixed(1)} samples/s)\n`);
        for (const c of result.checkpoints) process.stdout.write(`checkpoint ${c}\n`);
        if (o.trace) process.stdout.write(`wrote the last step's measured timeline to ${o.trace} (ui.perfetto.dev; cleave plan print ${planFile} --measured ${o.trace})\n`);
      }
    });
}

/**
 * `--gpus N`: this process launches N processes on this host, each running the same command as
 * one rank (torchrun's variables; each takes the GPU of its local rank), every rank logging to its
 * own file and rank 0 shown here. One that fails stops the others (SIGTERM, then SIGKILL).
 */
async function launchGpus(planFile: string, ranks: number, o: RunFlags): Promise<void> {
  if (o.backend !== 'cuda') throw new CleaveError('--gpus needs --backend cuda');
  if (o.gpus !== ranks) throw new CleaveError(`${planFile} has ${ranks} ranks; --gpus ${o.gpus} starts ${o.gpus} processes (one host runs one rank per GPU)`);
  const args = process.argv.slice(1).filter((a, i, all) => a !== '--gpus' && !a.startsWith('--gpus=') && all[i - 1] !== '--gpus' && a !== '--log-dir' && !a.startsWith('--log-dir=') && all[i - 1] !== '--log-dir');
  const logDir = o.logDir ?? join('cleave-logs', new Date().toISOString().replace(/[:.]/g, '-'));
  const port = Number(process.env['MASTER_PORT'] ?? (await freePort()));
  // What each rank's cudaEnvironment asks for, set before the ranks start in case CUDA loads early.
  const env = { CUDA_DEVICE_MAX_CONNECTIONS: process.env['CUDA_DEVICE_MAX_CONNECTIONS'] ?? '32', CUDA_MODULE_LOADING: process.env['CUDA_MODULE_LOADING'] ?? 'LAZY' };
  await launchProcesses({ nprocs: ranks, masterPort: port, command: process.execPath, args, logDir, env });
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
 * CLEAVE_FAIL_AT=rank:step:instruction makes that rank fail at that instruction of that step: how
 * the fault tests stop one process of a multi-GPU run.
 */
function failAtFromEnv(): RunOptions['failAt'] {
  const v = process.env['CLEAVE_FAIL_AT'];
  if (!v) return undefined;
  const m = /^(\d+):(\d+):(\d+)$/.exec(v);
  if (!m) throw new CleaveError(`CLEAVE_FAIL_AT=${v} is not rank:step:instruction`);
  return { rank: Number(m[1]), step: Number(m[2]), instruction: Number(m[3]) };
}
