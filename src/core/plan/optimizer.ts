import { CleaveError } from '../errors.js';
import type { PlanOptimizer } from './types.js';

/** The optimizer families the memory plan knows (how much state a parameter carries). */
export const OPTIMIZER_FAMILIES = ['sgd', 'sgd-momentum', 'adam', 'adamw'] as const;
export type OptimizerFamilyName = (typeof OPTIMIZER_FAMILIES)[number];

/** cleave's defaults: PyTorch's betas and ε; no weight decay; lr 3e-3, the bundled tasks' rate. */
export const DEFAULT_LR = 3e-3;
const DEFAULT_MOMENTUM = 0.9;

/**
 * The optimizer a family name stands for, with defaults filled: `sgd-momentum` is SGD with momentum
 * 0.9 unless `momentum` says otherwise. Values are checked by `checkOptimizer`.
 */
export function planOptimizer(family: string, given: Partial<Omit<PlanOptimizer, 'kind'>> = {}): PlanOptimizer {
  if (!(OPTIMIZER_FAMILIES as readonly string[]).includes(family)) throw new CleaveError(`the optimizer must be one of ${OPTIMIZER_FAMILIES.join(', ')}; got '${family}'`);
  const kind = family === 'sgd-momentum' ? 'sgd' : (family as PlanOptimizer['kind']);
  return {
    kind,
    lr: given.lr ?? DEFAULT_LR,
    weightDecay: given.weightDecay ?? 0,
    momentum: kind === 'sgd' ? (given.momentum ?? (family === 'sgd-momentum' ? DEFAULT_MOMENTUM : 0)) : 0,
    beta1: given.beta1 ?? 0.9,
    beta2: given.beta2 ?? 0.999,
    eps: given.eps ?? 1e-8,
    clip: given.clip ?? 0,
  };
}

/**
 * The range of each hyperparameter, one table for flags and for plans read back (clip 0 means no
 * clipping in a plan; a flag asks for clipping, so --clip must be > 0).
 */
export const OPTIMIZER_RULES: Record<Exclude<keyof PlanOptimizer, 'kind'>, { ok: (x: number) => boolean; rule: string }> = {
  lr: { ok: (x) => x > 0, rule: 'a number > 0' },
  weightDecay: { ok: (x) => x >= 0, rule: 'a number ≥ 0' },
  momentum: { ok: (x) => x >= 0 && x < 1, rule: 'a number in [0, 1)' },
  beta1: { ok: (x) => x >= 0 && x < 1, rule: 'a number in [0, 1)' },
  beta2: { ok: (x) => x >= 0 && x < 1, rule: 'a number in [0, 1)' },
  eps: { ok: (x) => x > 0, rule: 'a number > 0' },
  clip: { ok: (x) => x >= 0, rule: 'a number ≥ 0 (0: none)' },
};

/** The family whose state the optimizer keeps: what the memory plan must hold. */
export const optimizerFamily = (o: PlanOptimizer): OptimizerFamilyName => (o.kind === 'sgd' ? (o.momentum > 0 ? 'sgd-momentum' : 'sgd') : o.kind);

/** Optimizer state buffers per parameter, by family. */
export const stateBuffers = (f: string): number => (f === 'sgd' ? 0 : f === 'sgd-momentum' ? 1 : 2);

/** One line a person reads: `adamw (lr 0.003, weight decay 0.01, β 0.9/0.999, ε 1e-8)`. */
export function describeOptimizer(o: PlanOptimizer): string {
  const parts = [`lr ${o.lr}`];
  if (o.weightDecay) parts.push(`weight decay ${o.weightDecay}`);
  if (o.kind === 'sgd' && o.momentum) parts.push(`momentum ${o.momentum}`);
  if (o.kind !== 'sgd') parts.push(`β ${o.beta1}/${o.beta2}`, `ε ${o.eps}`);
  if (o.clip) parts.push(`clip ${o.clip}`);
  return `${o.kind} (${parts.join(', ')})`;
}
