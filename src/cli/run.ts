import type { Command } from 'commander';
import { resolve } from 'node:path';
import { readManifest } from '../../runtime/checkpoint/checkpoint.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { runPlanCuda } from '../../runtime/launch/cuda.js';
import type { DataOptions } from '../../runtime/launch/options.js';
import { OPTIMIZER_KINDS, type OptimizerConfig } from '../../runtime/optim/optimizer.js';
import { CleaveError } from '../errors.js';
import { readPlan } from '../plan/io.js';
import { numberFlag, positiveInt } from './options.js';
import { Progress } from './progress.js';

interface RunFlags {
  backend: string; cudaGraph?: boolean; launchLists?: boolean; lossScale?: string; trace?: string; weights?: string; resume?: string; data?: string; tokens: string; steps: number;
  saveEvery?: number; checkpointDir?: string; optimizer: string; lr: string; weightDecay?: string; momentum?: string;
  clip?: string; seed: string; timeout: number; json?: boolean;
}

const num = (flag: string, v: string | undefined): number | undefined => numberFlag(flag, v, 0);

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run a compiled plan: one rank per worker thread (CPU backend), or a one-rank plan on the GPU (--backend cuda)')
    .argument('<plan>', 'plan file from cleave compile')
    .option('--backend <name>', 'cpu (worker threads), or cuda (one GPU, one-rank plans)', 'cpu')
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
    .option('--cuda-graph', 'cuda backend: capture the step as one CUDA graph after a first eager step, then replay it')
    .option('--no-launch-lists', 'cuda backend: enqueue every node from JavaScript each step instead of replaying recorded launch lists')
    .option('--loss-scale <x>', 'cuda backend, fp16 plans: initial loss scale (default 32768; halves on overflow, doubles after 2000 clean steps)')
    .option('--trace <file>', 'cpu backend: write the last step\'s measured timeline, every rank on one clock (Perfetto / Chrome trace; cleave plan print --measured reads it)')
    .option('--json', 'one JSON object per step')
    .action(async (planFile: string, o: RunFlags) => {
      if (o.cudaGraph && o.backend !== 'cuda') throw new CleaveError('--cuda-graph needs --backend cuda');
      if (o.launchLists === false && o.backend !== 'cuda') throw new CleaveError('--no-launch-lists needs --backend cuda');
      if (o.trace && o.backend !== 'cpu') throw new CleaveError('--trace measures CPU ranks so far (the CUDA backend would time its kernels with events; that comes with multi-GPU runs)');
      if (o.lossScale !== undefined && o.backend !== 'cuda') throw new CleaveError('--loss-scale needs --backend cuda (and an fp16 plan)');
      if (o.backend !== 'cpu' && o.backend !== 'cuda') throw new CleaveError(`--backend must be cpu or cuda; got '${o.backend}'`);
      if (o.weights && o.resume) throw new CleaveError('give --weights or --resume, not both');
      if (o.saveEvery && !o.checkpointDir) throw new CleaveError('--save-every needs --checkpoint-dir');
      if (!(OPTIMIZER_KINDS as readonly string[]).includes(o.optimizer)) throw new CleaveError(`--optimizer must be one of ${OPTIMIZER_KINDS.join(', ')}; got '${o.optimizer}'`);
      const plan = readPlan(planFile);
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
      if (!o.json) process.stdout.write(`running ${planFile}: ${w.size} ranks (${w.pp} pipeline × ${w.dp} data parallel), ${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}, ${o.backend} backend${start ? `, resuming at step ${start}` : ''}\n`);
      const progress = new Progress(o.steps, 'samples', !!o.json, start);
      let samples = 0;
      const run = o.backend === 'cuda' ? runPlanCuda : runPlanCpu;
      const result = await run({
        planFile, weights: o.weights, resume: o.resume, data, steps: o.steps, optimizer, clip: num('--clip', o.clip),
        seed: Number(o.seed), saveEvery: o.saveEvery, checkpointDir: o.checkpointDir, timeoutSeconds: o.timeout, cudaGraph: !!o.cudaGraph, launchLists: o.launchLists !== false, lossScale: num('--loss-scale', o.lossScale), trace: o.trace,
      }, (r) => {
        samples += r.samples;
        if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
        progress.update(r.step, samples, `loss ${r.loss.toFixed(4)}`);
      });
      const secs = progress.stop();
      if (!o.json) {
        const s = result.steps;
        process.stdout.write(`loss ${s[0]?.loss.toFixed(4)} → ${s.at(-1)?.loss.toFixed(4)} in ${s.length} steps, ${secs.toFixed(1)} s (${(samples / secs).toFixed(1)} samples/s)\n`);
        for (const c of result.checkpoints) process.stdout.write(`checkpoint ${c}\n`);
        if (o.trace) process.stdout.write(`wrote the last step's measured timeline to ${o.trace} (ui.perfetto.dev; cleave plan print ${planFile} --measured ${o.trace})\n`);
      }
    });
}
