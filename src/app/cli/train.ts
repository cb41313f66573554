import type { Command } from 'commander';
import { LOSS_KINDS } from '../../../compiler/autodiff/loss.js';
import { optimizerConfig } from '../../../runtime/optim/optimizer.js';
import { type TrainJob, prepareJob, runStep, saveTrained } from '../api/train/job.js';
import { CleaveError } from '../../core/errors.js';
import { parameterStats } from '../../core/ir/stats.js';
import { describeOptimizer } from '../../core/plan/optimizer.js';
import { formatCount } from '../../core/util/format.js';
import { dataFlags } from './data_flags.js';
import { dimBinding, numberFlag, positiveInt } from './options.js';
import { type OptimizerFlags, optimizerFromFlags, optimizerOptions } from './optimizer_flags.js';
import { checkOutputFile } from './paths.js';
import { Progress } from './progress.js';

interface TrainFlags extends OptimizerFlags {
  loss: string; output?: string; labels?: string; ignoreIndex?: string;
  data?: string; tokens?: string; steps: number; batch: number; microbatches: number;
  schedule: string; warmup?: string; minLr?: string; seed?: string; dim?: Record<string, number>;
  out?: string; json?: boolean;
}

/** An integer flag ≥ `min`, or undefined when left out. */
export function intFlag(flag: string, v: string | undefined, min = 0): number | undefined {
  const n = numberFlag(flag, v, min);
  if (n !== undefined && !Number.isInteger(n)) throw new CleaveError(`${flag} must be a whole number ≥ ${min}, got '${v}'`);
  return n;
}

export function jobFromFlags(model: string, o: TrainFlags): TrainJob {
  if (!(LOSS_KINDS as readonly string[]).includes(o.loss) && o.loss !== 'auto') throw new CleaveError(`--loss must be one of auto, ${LOSS_KINDS.join(', ')}; got '${o.loss}'`);
  if (!['constant', 'cosine'].includes(o.schedule)) throw new CleaveError(`--schedule must be constant or cosine; got '${o.schedule}'`);
  const ignoreIndex = numberFlag('--ignore-index', o.ignoreIndex);
  if (ignoreIndex !== undefined && !Number.isInteger(ignoreIndex)) throw new CleaveError(`--ignore-index must be a whole number (a label value), got '${o.ignoreIndex}'`);
  if (o.loss === 'output' && o.labels !== undefined) throw new CleaveError('--labels goes with --loss cross-entropy or mse: --loss output minimizes the model\'s own scalar output, which takes no labels');
  if (o.loss !== 'cross-entropy' && o.loss !== 'auto' && ignoreIndex !== undefined) throw new CleaveError(`--ignore-index goes with --loss cross-entropy (integer labels), not --loss ${o.loss}`);
  const loss: TrainJob['loss'] = o.loss === 'auto' ? { kind: 'auto', output: o.output, labels: o.labels, ignoreIndex }
    : o.loss === 'cross-entropy' ? { kind: 'cross-entropy', output: o.output, labels: o.labels, ignoreIndex }
    : o.loss === 'mse' ? { kind: 'mse', output: o.output, labels: o.labels }
    : { kind: 'output', output: o.output };
  const opt = optimizerFromFlags(o);
  const warmup = intFlag('--warmup', o.warmup);
  if (warmup !== undefined && warmup > o.steps) throw new CleaveError(`--warmup ${warmup} is longer than the run (--steps ${o.steps}): the rate would never reach --lr ${opt.lr}`);
  const minLr = numberFlag('--min-lr', o.minLr, 0);
  if (minLr !== undefined && o.schedule !== 'cosine') throw new CleaveError('--min-lr is the floor of --schedule cosine; the constant schedule has none');
  if (minLr !== undefined && minLr > opt.lr) throw new CleaveError(`--min-lr ${minLr} is above --lr ${opt.lr}: the cosine schedule decays from --lr down to --min-lr`);
  const data = dataFlags(o);
  return {
    model, loss, data: data.path, tokenType: data.tokenType,
    steps: o.steps, batch: o.batch, microbatches: o.microbatches, optimizer: optimizerConfig(opt),
    schedule: { kind: o.schedule as 'constant' | 'cosine', warmup, total: o.steps, minLr },
    clip: opt.clip || undefined, seed: intFlag('--seed', o.seed), dims: o.dim,
  };
}

export function registerTrain(program: Command): void {
  const cmd = program
    .command('train')
    .description('train a model on the CPU backend, with gradient accumulation over microbatches')
    .argument('<model>', 'ONNX model file')
    .option('--loss <kind>', `auto, ${LOSS_KINDS.join(', ')}`, 'auto')
    .option('--output <name>', 'the model output the loss reads (default: the first float output)')
    .option('--labels <name>', 'name of the labels input the loss adds')
    .option('--ignore-index <n>', 'label value cross-entropy ignores')
    .option('--data <path>', 'a .bin token file (nanoGPT) or a folder of NAME.npy arrays; default: a bundled task')
    .option('--tokens <type>', 'token type of a .bin file: uint16 (default) or int32')
    .option('--steps <n>', 'optimizer steps', positiveInt('--steps'), 100)
    .option('--batch <n>', 'samples per step', positiveInt('--batch'), 8)
    .option('--microbatches <n>', 'microbatches per step (gradient accumulation)', positiveInt('--microbatches'), 1);
  optimizerOptions(cmd, 'train')
    .option('--schedule <kind>', 'learning-rate schedule: constant or cosine (decay to --min-lr over the run)', 'constant')
    .option('--warmup <n>', 'linear warm-up steps (at most --steps)')
    .option('--min-lr <x>', 'floor of the cosine schedule (at most --lr)')
    .option('--seed <n>', 'seed of the data order (default 0)')
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .option('-o, --out <file>', 'write the trained model as ONNX')
    .option('--json', 'print one JSON object per step and a summary')
    .action((model: string, o: TrainFlags) => {
      const job = jobFromFlags(model, o);
      checkOutputFile('-o', o.out);
      const p = prepareJob(job);
      const params = parameterStats(p.graph).count;
      if (!o.json) {
        process.stdout.write(`training ${model}: ${formatCount(params)} parameters, loss ${p.lossSpec.kind}, ${describeOptimizer(optimizerFromFlags(o))}, float32 on the CPU\n`);
        process.stdout.write(`batch ${job.batch} = ${job.microbatches} × ${p.microbatch}; data: ${p.data.description}\n`);
      }
      const progress = new Progress(job.steps, 'samples', !!o.json);
      let first = NaN, last = NaN;
      for (let s = 0; s < job.steps; s++) {
        const r = runStep(p);
        if (s === 0) first = r.loss;
        last = r.loss;
        if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
        progress.update(r.step, r.step * job.batch, `loss ${r.loss.toFixed(4)}`);
      }
      const secs = progress.stop();
      const fixed = o.out ? saveTrained(p, o.out) : undefined;
      const summary = { steps: job.steps, firstLoss: first, finalLoss: last, seconds: secs, samplesPerSecond: (job.steps * job.batch) / secs, out: o.out ?? null };
      if (o.json) process.stdout.write(JSON.stringify({ summary }) + '\n');
      else {
        process.stdout.write(`loss ${first.toFixed(4)} → ${last.toFixed(4)} in ${job.steps} steps, ${secs.toFixed(1)} s (${summary.samplesPerSecond.toFixed(1)} samples/s)\n`);
        if (o.out) process.stdout.write(`wrote ${o.out}${fixed ? ` (batch fixed to ${fixed}: the model's shapes depend on it)` : ''}\n`);
      }
    });
}
