import type { Command } from 'commander';
import { CleaveError } from '../../core/errors.js';
import { DEFAULT_LR, OPTIMIZER_FAMILIES, OPTIMIZER_RULES, optimizerFamily, planOptimizer, stateBuffers } from '../../core/plan/optimizer.js';
import type { PlanOptimizer } from '../../core/plan/types.js';

/** The optimizer's flags, as `train`, `compile` and `run` take them (strings: checked here). */
export interface OptimizerFlags {
  optimizer?: string; lr?: string; weightDecay?: string; momentum?: string; beta1?: string; beta2?: string; eps?: string; clip?: string;
}

type Numbers = Partial<Omit<PlanOptimizer, 'kind'>>;

/** Adds the optimizer's flags to a command; `defaults` says where values come from when a flag is left out. */
export function optimizerOptions(cmd: Command, defaults: string): Command {
  return cmd
    .option('--optimizer <kind>', `${OPTIMIZER_FAMILIES.join(', ')} (${defaults}; default adamw)`)
    .option('--lr <x>', `learning rate (${defaults}; default ${DEFAULT_LR})`)
    .option('--weight-decay <x>', 'weight decay: decoupled for adamw, L2 otherwise (default 0)')
    .option('--momentum <x>', 'SGD momentum in [0, 1) (sgd-momentum: default 0.9)')
    .option('--beta1 <x>', 'Adam/AdamW β1 in [0, 1) (default 0.9)')
    .option('--beta2 <x>', 'Adam/AdamW β2 in [0, 1) (default 0.999)')
    .option('--eps <x>', 'Adam/AdamW ε > 0 (default 1e-8)')
    .option('--clip <x>', 'clip the global gradient norm, across all stages, to this value > 0');
}

const FLAGS: Record<keyof Numbers, string> = {
  lr: '--lr', weightDecay: '--weight-decay', momentum: '--momentum', beta1: '--beta1', beta2: '--beta2', eps: '--eps', clip: '--clip',
};
// The plan's ranges, except that a --clip flag asks for clipping (a plan's 0 means none).
const RULES: Record<keyof Numbers, { flag: string; ok: (x: number) => boolean; rule: string }> = Object.fromEntries(
  (Object.keys(FLAGS) as (keyof Numbers)[]).map((k) => [k, k === 'clip' ? { flag: FLAGS[k], ok: (x: number) => x > 0, rule: 'a number > 0' } : { flag: FLAGS[k], ...OPTIMIZER_RULES[k] }]),
) as Record<keyof Numbers, { flag: string; ok: (x: number) => boolean; rule: string }>;

/** The numbers given on the command line, each checked against its rule. */
function givenNumbers(o: OptimizerFlags): Numbers {
  const out: Numbers = {};
  for (const [key, r] of Object.entries(RULES) as [keyof Numbers, (typeof RULES)[keyof Numbers]][]) {
    const raw = o[key];
    if (raw === undefined) continue;
    const x = raw.trim() === '' ? NaN : Number(raw);
    if (!Number.isFinite(x) || !r.ok(x)) throw new CleaveError(`${r.flag} must be ${r.rule}, got '${raw}'`);
    out[key] = x;
  }
  return out;
}

function family(name: string): string {
  if (!(OPTIMIZER_FAMILIES as readonly string[]).includes(name)) throw new CleaveError(`--optimizer must be one of ${OPTIMIZER_FAMILIES.join(', ')}; got '${name}'`);
  return name;
}

/** Flags that belong to another optimizer than the one used are refused, not ignored. */
function checkApplies(kind: PlanOptimizer['kind'], given: Numbers, from: string): void {
  if (kind !== 'sgd' && given.momentum !== undefined) throw new CleaveError(`--momentum applies to sgd; the optimizer is ${kind}${from}`);
  const adam = (['beta1', 'beta2', 'eps'] as const).find((k) => given[k] !== undefined);
  if (kind === 'sgd' && adam) throw new CleaveError(`${RULES[adam].flag} applies to adam and adamw; the optimizer is sgd${from}`);
}

/** The optimizer a command line asks for (`train`, `compile`): `--optimizer` over `fallback` over adamw. */
export function optimizerFromFlags(o: OptimizerFlags, fallback = 'adamw'): PlanOptimizer {
  const fam = family(o.optimizer ?? fallback);
  const given = givenNumbers(o);
  const opt = planOptimizer(fam, given);
  checkApplies(opt.kind, given, '');
  return opt;
}

/**
 * What `cleave run` trains with: the plan's optimizer, with each flag that differs applied and
 * said (`changes`). Another optimizer than the plan's is taken only if it keeps no more state than
 * the plan's memory holds; otherwise the plan must be compiled for it.
 */
export function optimizerForRun(plan: PlanOptimizer, planFamily: string, o: OptimizerFlags): { config: PlanOptimizer; changes: string[] } {
  const given = givenNumbers(o);
  let base = plan;
  if (o.optimizer !== undefined) {
    const fam = family(o.optimizer);
    // --optimizer names a family as compile's does, keeping the plan's hyperparameters that apply
    // to it: sgd has no momentum (sgd-momentum keeps the plan's, else 0.9), and adam ↔ adamw keep
    // the plan's betas and ε (they were reset to the defaults, silently). Before, `--optimizer sgd`
    // on an sgd-momentum plan kept the momentum and said nothing.
    const momentum = fam === 'sgd-momentum' && plan.kind === 'sgd' && plan.momentum > 0 ? { momentum: plan.momentum } : {};
    const adam = plan.kind !== 'sgd' ? { beta1: plan.beta1, beta2: plan.beta2, eps: plan.eps } : {};
    base = planOptimizer(fam, { lr: plan.lr, weightDecay: plan.weightDecay, clip: plan.clip, ...momentum, ...adam });
    if (stateBuffers(optimizerFamily(base)) > stateBuffers(planFamily)) {
      throw new CleaveError(`--optimizer ${o.optimizer}: the plan was compiled for ${planFamily}, whose memory plan holds no room for ${optimizerFamily(base)}'s state; compile the plan with --optimizer ${o.optimizer}`);
    }
  }
  checkApplies(base.kind, given, o.optimizer === undefined ? ' (from the plan)' : '');
  const config = { ...base, ...given };
  if (stateBuffers(optimizerFamily(config)) > stateBuffers(planFamily)) {
    throw new CleaveError(`--momentum ${config.momentum}: the plan was compiled for ${planFamily}, whose memory plan holds no momentum buffer; compile the plan with --optimizer sgd-momentum`);
  }
  // What differs from the plan in the end (`--optimizer sgd --momentum 0.9` on an sgd-momentum 0.9
  // plan changes nothing, and says so).
  const changes: string[] = [];
  if (o.optimizer !== undefined && (config.kind !== plan.kind || optimizerFamily(config) !== optimizerFamily(plan))) {
    changes.push(`--optimizer ${o.optimizer} (the plan has ${optimizerFamily(plan)})`);
  }
  for (const [key, x] of Object.entries(given) as [keyof Numbers, number][]) {
    if (x !== plan[key]) changes.push(`${RULES[key].flag} ${x} (the plan has ${plan[key] || (key === 'clip' ? 'none' : 0)})`);
  }
  return { config, changes };
}
