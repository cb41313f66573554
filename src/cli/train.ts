import type { Command } from 'commander';
import { LOSS_KINDS, type LossSpec } from '../../compiler/autodiff/loss.js';
import { OPTIMIZER_KINDS, type OptimizerConfig } from '../../runtime/optim/optimizer.js';
import { type TrainJob, prepareJob, runStep, saveTrained } from '../../runtime/train/job.js';
import { CleaveError } from '../errors.js';
import { parameterStats } from '../ir/stats.js';
import { formatCount } from './format.js';
import { dimBinding, numberFlag, positiveInt } from './options.js';
import { Progress } from './progress.js';

interface TrainFlags {
  loss: string; output?: string; labels?: string; ignoreIndex?: string;
  data?: string; tokens: string; steps: number; batch: number; microbatches: number;
  optimizer: string; lr: string; weightDecay?: string; momentum?: string; beta1?: string; beta2?: string; eps?: string;
  schedule: string; warmup?: string; minLr?: string; clip?: string; seed: string; dim?: Record<string, number>;
  out?: string; json?: boolean;
}

export function jobFromFlags(model: string, o: TrainFlags): TrainJob {
  if (!(LOSS_KINDS as readonly string[]).includes(o.loss) && o.loss !== 'auto') throw new CleaveError(`--loss must be one of auto, ${LOSS_KINDS.join(', ')}; got '${o.loss}'`);
  if (!(OPTIMIZER_KINDS as readonly string[]).includes(o.optimizer)) throw new CleaveError(`--optimizer must be one of ${OPTIMIZER_KINDS.join(', ')}; got '${o.optimizer}'`);
  if (!['constant', 'cosine'].includes(o.schedule)) throw new CleaveError(`--schedule must be constant or cosine; got '${o.schedule}'`);
  if (!['uint16', 'int32'].includes(o.tokens)) throw new CleaveError(`--tokens must be uint16 or int32; got '${o.tokens}'`);
  const ignoreIndex = numberFlag('--ignore-index', o.ignoreIndex);
  const loss: LossSpec | 'auto' = o.loss === 'auto' ? 'auto'
    : o.loss === 'cross-entropy' ? { kind: 'cross-entropy', output: o.output, labels: o.labels, ignoreIndex }
    : o.loss === 'mse' ? { kind: 'mse', output: o.output, labels: o.labels }
    : { kind: 'output', output: o.output };
  const lr = numberFlag('--lr', o.lr, 0)!;
  const weightDecay = numberFlag('--weight-decay', o.weightDecay, 0);
  const optimizer: OptimizerConfig = o.optimizer === 'sgd'
    ? { kind: 'sgd', lr, momentum: numberFlag('--momentum', o.momentum, 0), weightDecay }
    : { kind: o.optimizer as 'adam' | 'adamw', lr, beta1: numberFlag('--beta1', o.beta1, 0), beta2: numberFlag('--beta2', o.beta2, 0), eps: numberFlag('--eps', o.eps, 0), weightDecay };
  return {
    model, loss, data: o.data, tokenType: o.tokens as 'uint16' | 'int32',
    steps: o.steps, batch: o.batch, microbatches: o.microbatches, optimizer,
    schedule: { kind: o.schedule as 'constant' | 'cosine', warmup: numberFlag('--warmup', o.warmup, 0), total: o.steps, minLr: numberFlag('--min-lr', o.minLr, 0) },
    clip: numberFlag('--clip', o.clip, 0), seed: numberFlag('--seed', o.seed), dims: o.dim,
  };
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('train a model on the CPU backend, with gradient accumulation over microbatches')
    .argument('<model>', 'ONNX model file')
    .option('--loss <kind>', `auto, ${LOSS_KINDS.join(', ')}`, 'auto')
    .option('--output <name>', 'the model output the loss reads (default: the first float output)')
    .option('--labels <name>', 'name of the labels input the loss adds')
    .option('--ignore-index <n>', 'label value cross-entropy ignores')
    .option('--data <path>', 'a .bin token file (nanoGPT) or a folder of NAME.npy arrays; default: a bundled task')
    .option('--tokens <type>', 'token type of a .bin file: uint16 or int32', 'uint16')
    .option('--steps <n>', 'optimizer steps', positiveInt('--steps'), 100)
    .option('--batch <n>', 'samples per step', positiveInt('--batch'), 8)
    .option('--microbatches <n>', 'microbatches per step (gradient accumulation)', positiveInt('--microbatches'), 1)
    .option('--optimizer <kind>', OPTIMIZER_KINDS.join(', '), 'adamw')
    .option('--lr <x>', 'learning rate', '3e-3')
    .option('--weight-decay <x>', 'weight decay (decoupled for adamw, L2 otherwise)')
    .option('--momentum <x>', 'SGD momentum')
    .option('--beta1 <x>', 'Adam β1')
    .option('--beta2 <x>', 'Adam β2')
    .option('--eps <x>', 'Adam ε')
    .option('--schedule <kind>', 'constant or cosine (decay to --min-lr over the run)', 'constant')
    .option('--warmup <n>', 'linear warm-up steps')
    .option('--min-lr <x>', 'floor of the cosine schedule')
    .option('--clip <x>', 'clip the global gradient norm to this value')
    .option('--seed <n>', 'seed of the data order', '0')
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .option('-o, --out <file>', 'write the trained model as ONNX')
    .option('--json', 'print one JSON object per step and a summary')
    .action((model: string, o: TrainFlags) => {
      const job = jobFromFlags(model, o);
      const p = prepareJob(job);
      const params = parameterStats(p.graph).count;
      if (!o.json) {
        process.stdout.write(`training ${model}: ${formatCount(params)} parameters, loss ${p.lossSpec.kind}, ${job.optimizer.kind} lr ${job.optimizer.lr}\n`);
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
