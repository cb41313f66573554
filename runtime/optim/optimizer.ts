import { CleaveError } from '../../src/core/errors.js';
import type { PlanOptimizer } from '../../src/core/plan/types.js';

type Floats = Float32Array | Float64Array;

/** A parameter as the optimizer sees it: its values (updated in place) and its gradient. */
export interface ParamSlot {
  readonly name: string;
  readonly value: Floats;
  readonly grad: Floats;
}

export type OptimizerConfig =
  | { kind: 'sgd'; lr: number; momentum?: number; dampening?: number; nesterov?: boolean; weightDecay?: number }
  | { kind: 'adam' | 'adamw'; lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number };

export const OPTIMIZER_KINDS = ['sgd', 'adam', 'adamw'] as const;

/** The optimizer a plan (or a command line, through the plan's form) asks for; clipping is the step's, not the optimizer's. */
export function optimizerConfig(p: PlanOptimizer): OptimizerConfig {
  return p.kind === 'sgd'
    ? { kind: 'sgd', lr: p.lr, momentum: p.momentum, weightDecay: p.weightDecay }
    : { kind: p.kind, lr: p.lr, beta1: p.beta1, beta2: p.beta2, eps: p.eps, weightDecay: p.weightDecay };
}

/** Optimizer state: named buffers per parameter plus a step count, enough to checkpoint and resume. */
export interface OptimizerState {
  step: number;
  buffers: Record<string, Record<string, Float64Array>>;
}

/**
 * SGD (momentum, dampening, Nesterov, L2 weight decay), Adam (L2 weight decay) and AdamW (decoupled
 * weight decay), with PyTorch's update rules so that hyperparameters carry over. State is float64:
 * moments of float32 weights lose nothing to rounding across long runs.
 */
export class Optimizer {
  readonly state: OptimizerState = { step: 0, buffers: {} };

  constructor(readonly config: OptimizerConfig) {
    if (!(config.lr >= 0)) throw new CleaveError(`learning rate must be ≥ 0, got ${config.lr}`);
    if (config.kind === 'sgd' && config.nesterov && !((config.momentum ?? 0) > 0 && (config.dampening ?? 0) === 0)) {
      throw new CleaveError('Nesterov momentum needs momentum > 0 and dampening 0');
    }
  }

  private buf(name: string, key: string, n: number): { b: Float64Array; fresh: boolean } {
    const slot = (this.state.buffers[name] ??= {});
    const fresh = !slot[key];
    if (fresh) slot[key] = new Float64Array(n);
    return { b: slot[key]!, fresh };
  }

  /** One update of every parameter; `lr` overrides the configured rate (schedules). */
  step(params: readonly ParamSlot[], lr = this.config.lr): void {
    const t = ++this.state.step;
    const c = this.config;
    for (const p of params) {
      const { value: w, grad: g, name } = p;
      const wd = c.weightDecay ?? 0;
      if (c.kind === 'sgd') {
        const mom = c.momentum ?? 0, damp = c.dampening ?? 0;
        const { b, fresh } = mom ? this.buf(name, 'momentum', w.length) : { b: null, fresh: false };
        for (let i = 0; i < w.length; i++) {
          let d = g[i]! + wd * w[i]!;
          if (b) {
            b[i] = fresh ? d : mom * b[i]! + (1 - damp) * d;
            d = c.nesterov ? d + mom * b[i]! : b[i]!;
          }
          w[i] = w[i]! - lr * d;
        }
      } else {
        const b1 = c.beta1 ?? 0.9, b2 = c.beta2 ?? 0.999, eps = c.eps ?? 1e-8;
        const m = this.buf(name, 'exp_avg', w.length).b;
        const v = this.buf(name, 'exp_avg_sq', w.length).b;
        const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
        for (let i = 0; i < w.length; i++) {
          let wi = w[i]!;
          let d = g[i]!;
          if (c.kind === 'adamw') wi *= 1 - lr * wd;
          else d += wd * wi;
          m[i] = b1 * m[i]! + (1 - b1) * d;
          v[i] = b2 * v[i]! + (1 - b2) * d * d;
          w[i] = wi - (lr / bc1) * (m[i]! / (Math.sqrt(v[i]! / bc2) + eps));
        }
      }
    }
  }
}

/** Scales gradients in place so their global L2 norm is at most `maxNorm`; returns the norm before. */
export function clipGradNorm(grads: readonly Floats[], maxNorm: number): number {
  let sq = 0;
  for (const g of grads) for (const x of g) sq += x * x;
  const total = Math.sqrt(sq);
  const coef = maxNorm / (total + 1e-6);
  if (coef < 1) for (const g of grads) for (let i = 0; i < g.length; i++) g[i] = g[i]! * coef;
  return total;
}

export interface Schedule {
  kind: 'constant' | 'cosine';
  /** Linear warm-up steps (from lr/warmup to lr). */
  warmup?: number;
  /** Steps over which cosine decays to minLr. */
  total?: number;
  minLr?: number;
}

/** Learning rate at 0-based `step`: linear warm-up, then constant or cosine decay to minLr. */
export function learningRate(base: number, step: number, s: Schedule): number {
  const warm = s.warmup ?? 0;
  if (step < warm) return (base * (step + 1)) / warm;
  if (s.kind === 'constant') return base;
  const total = s.total ?? step + 1;
  const progress = Math.min(1, (step - warm) / Math.max(1, total - warm));
  const min = s.minLr ?? 0;
  return min + 0.5 * (1 + Math.cos(Math.PI * progress)) * (base - min);
}
