import type { TrainingGraph } from '../../../../compiler/autodiff/training.js';
import { CleaveError } from '../../../core/errors.js';
import type { Value } from '../../../core/ir/graph.js';
import { materializeAll } from '../../../core/ir/materialize.js';
import type { Tensor } from '../../../core/ir/tensor.js';
import { runGraph } from '../../../../runtime/backends/cpu/interpreter.js';
import { type OptimizerConfig, Optimizer, type ParamSlot, type Schedule, clipGradNorm, learningRate } from '../../../../runtime/optim/optimizer.js';

export interface TrainerOptions {
  optimizer: OptimizerConfig;
  /** Runs the training graph for one microbatch; default the CPU interpreter (tests pass the CUDA one). */
  runner?: (g: TrainingGraph['graph'], feeds: Readonly<Record<string, Tensor>>) => Map<string, Tensor>;
  schedule?: Schedule;
  /** Clip the global gradient norm to this value. */
  clip?: number;
}

export interface StepResult {
  step: number;
  /** Mean of the microbatches' losses (SMP's reduce_mean of the step's loss). */
  loss: number;
  /** Each microbatch's loss. */
  losses: number[];
  gradNorm: number;
  lr: number;
}

/**
 * Trains a training graph on the CPU backend: per step, forward and backward over each microbatch,
 * gradients accumulated and averaged over the microbatches, clipped, then one optimizer update of
 * the parameter tensors in place (which the inference graph shares). State outputs (BatchNorm's
 * running statistics) are written back after every microbatch, as PyTorch does.
 */
export class CpuTrainer {
  readonly optimizer: Optimizer;
  private readonly params: Value[];
  private readonly accum: Map<string, Float64Array>;
  private steps = 0;

  constructor(readonly training: TrainingGraph, readonly opts: TrainerOptions) {
    this.optimizer = new Optimizer(opts.optimizer);
    materializeAll(training.graph);
    this.params = training.graph.params().filter((p) => training.grads.has(p.name));
    this.accum = new Map(this.params.map((p) => [p.name, new Float64Array(p.data!.data.length)]));
  }

  /** Gradients of one step, averaged over microbatches, without updating anything (for tests). */
  gradients(microbatches: readonly Record<string, Tensor>[]): { losses: number[]; grads: Map<string, Float64Array> } {
    if (!microbatches.length) throw new CleaveError('a step needs at least one microbatch');
    for (const a of this.accum.values()) a.fill(0);
    const losses: number[] = [];
    const g = this.training.graph;
    const run = this.opts.runner ?? runGraph;
    for (const feeds of microbatches) {
      const out = run(g, feeds);
      losses.push(out.get(this.training.loss.name)!.data[0]!);
      for (const p of this.params) {
        const d = out.get(this.training.grads.get(p.name)!.name)!.data;
        const a = this.accum.get(p.name)!;
        for (let i = 0; i < a.length; i++) a[i]! += d[i]!;
      }
      for (const [name, v] of this.training.stateUpdates) g.values.get(name)!.data!.data.set(out.get(v.name)!.data);
    }
    const m = microbatches.length;
    for (const a of this.accum.values()) for (let i = 0; i < a.length; i++) a[i]! /= m;
    return { losses, grads: this.accum };
  }

  step(microbatches: readonly Record<string, Tensor>[]): StepResult {
    const { losses, grads } = this.gradients(microbatches);
    const gradNorm = this.opts.clip !== undefined ? clipGradNorm([...grads.values()], this.opts.clip) : Math.sqrt([...grads.values()].reduce((s, a) => s + a.reduce((t, x) => t + x * x, 0), 0));
    const lr = learningRate(this.opts.optimizer.lr, this.steps, this.opts.schedule ?? { kind: 'constant' });
    const slots: ParamSlot[] = this.params.map((p) => ({ name: p.name, value: p.data!.data as Float32Array, grad: grads.get(p.name)! }));
    this.optimizer.step(slots, lr);
    this.steps++;
    const loss = losses.reduce((a, b) => a + b, 0) / losses.length;
    if (!Number.isFinite(loss)) throw new CleaveError(`step ${this.steps}: the loss is ${loss}; lower the learning rate or clip gradients (--clip)`);
    return { step: this.steps, loss, losses, gradNorm, lr };
  }
}
