import { dirname } from 'node:path';
import { type LossHints, type LossSpec, autoLoss } from '../../../../compiler/autodiff/loss.js';
import { type TrainingGraph, buildTrainingGraph } from '../../../../compiler/autodiff/training.js';
import { readModelFile } from '../../../core/onnx/codec.js';
import { writeOnnx } from '../../../../compiler/onnx/export.js';
import { importModel } from '../../../../compiler/onnx/import.js';
import { emptyFusionReport, fuseForward } from '../../../../compiler/passes/fusions.js';
import { CleaveError, SymbolicDimError } from '../../../core/errors.js';
import { isFloat } from '../../../core/ir/dtype.js';
import type { Graph } from '../../../core/ir/graph.js';
import type { Tensor } from '../../../core/ir/tensor.js';
import { type DataSource, defaultTask, openData } from '../../../../runtime/data/sources.js';
import type { OptimizerConfig, Schedule } from '../../../../runtime/optim/optimizer.js';
import { CpuTrainer, type StepResult } from './trainer.js';

export interface TrainJob {
  model: string;
  /** 'auto': the model's scalar output if it has one, cross-entropy for token models, else mse (for the output hinted, if one is). */
  loss: LossSpec | 'auto' | ({ kind: 'auto' } & LossHints);
  data?: string;
  tokenType?: 'uint16' | 'int32';
  steps: number;
  batch: number;
  microbatches: number;
  optimizer: OptimizerConfig;
  schedule?: Schedule;
  clip?: number;
  seed?: number;
  dims?: Record<string, number>;
  /** Ops in their training form (BatchNorm on batch statistics, Dropout dropping); default true. */
  trainingMode?: boolean;
}

export interface PreparedJob {
  job: TrainJob;
  microbatch: number;
  graph: Graph;
  training: TrainingGraph;
  trainer: CpuTrainer;
  data: DataSource;
  lossSpec: LossSpec;
}

/** Imports the model at the microbatch size, derives the training graph, opens the data. */
export function prepareJob(job: TrainJob): PreparedJob {
  for (const [k, v] of [['--steps', job.steps], ['--batch', job.batch], ['--microbatches', job.microbatches]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new CleaveError(`${k} must be a positive integer, got ${v}`);
  }
  if (job.batch % job.microbatches) throw new CleaveError(`--batch ${job.batch} does not divide into ${job.microbatches} microbatches`);
  const microbatch = job.batch / job.microbatches;
  const model = readModelFile(job.model);
  const graph = importModel(model, { baseDir: dirname(job.model), file: job.model }, { batch: microbatch, dims: job.dims });
  const lossSpec = job.loss === 'auto' ? autoLoss(graph) : job.loss.kind === 'auto' ? autoLoss(graph, job.loss) : job.loss;
  // The forward fusions compile runs: the same training graph, and the only one an ONNX Attention
  // with a mask can train as (its own gradient takes no mask).
  const training = buildTrainingGraph(graph, { loss: lossSpec, trainingMode: job.trainingMode, rewrite: (g) => fuseForward(g, emptyFusionReport()) });
  const trainer = new CpuTrainer(training, { optimizer: job.optimizer, schedule: job.schedule, clip: job.clip });
  const logits = graph.outputs.find((o) => isFloat(o.dtype));
  const classes = logits ? Number(logits.shape[logits.shape.length - 1]) : 2;
  const spec = { inputs: training.graph.inputs.filter((v) => v !== training.labels), labels: training.labels, lossKind: lossSpec.kind };
  const data = job.data
    ? openData(job.data, spec, { tokenType: job.tokenType, vocab: classes, seed: job.seed })
    : defaultTask(spec, { vocab: classes, classes, seed: job.seed });
  return { job, microbatch, graph, training, trainer, data, lossSpec };
}

export function runStep(p: PreparedJob): StepResult {
  const mbs: Record<string, Tensor>[] = [];
  for (let m = 0; m < p.job.microbatches; m++) mbs.push(p.data.next(p.microbatch));
  return p.trainer.step(mbs);
}

/**
 * Writes the trained model: the original model (symbolic batch kept where it can be) with the
 * trained parameters and state. Returns the batch size baked in, or null when it stayed symbolic.
 */
export function saveTrained(p: PreparedJob, out: string): number | null {
  const model = readModelFile(p.job.model);
  const src = { baseDir: dirname(p.job.model), file: p.job.model };
  let g: Graph;
  let fixed: number | null = null;
  try {
    g = importModel(model, src, { dims: p.job.dims });
  } catch (e) {
    if (!(e instanceof SymbolicDimError)) throw e;
    g = importModel(model, src, { batch: p.microbatch, dims: p.job.dims });
    fixed = p.microbatch;
  }
  for (const v of [...g.params(), ...g.states()]) {
    const trained = p.graph.values.get(v.name);
    if (!trained?.data) throw new CleaveError(`trained model has no tensor '${v.name}'`);
    v.data = trained.data;
  }
  writeOnnx(g, out);
  return fixed;
}
