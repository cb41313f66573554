import type { Command } from 'commander';
import type { LossSpec } from '../../../compiler/autodiff/loss.js';
import type { CompileOptions } from '../../../compiler/compile.js';
import { type ScheduleName, scheduleName } from '../../../compiler/cost/memory.js';
import { DTYPE_POLICIES, type DtypePolicy, readMeasuredProfile } from '../../../compiler/cost/model.js';
import { PROFILE_NAMES } from '../../../compiler/cost/profiles.js';
import { type SmpConfig, readSmpConfig } from '../api/config.js';
import { CleaveError } from '../../core/errors.js';
import { dimBinding, positiveInt } from './options.js';
import { type OptimizerFlags, optimizerFromFlags } from './optimizer_flags.js';

/** The flags `compile` and `partition` share: one meaning each, in both commands. */
export interface CompileFlags extends OptimizerFlags {
  partitions?: number; microbatches?: number; schedule?: string; virtualStages?: number; dp?: number; placement?: string;
  activeMicrobatches?: number; batch?: number; loss: string; memoryWeight?: string; device?: string; dtype?: string;
  assign?: string[]; autoPartition?: boolean; defaultPartition?: string; profile?: string; config?: string; dim?: Record<string, number>;
  json?: boolean;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** Adds the flags that decide the stages: what `partition` shows is what `compile` builds from them. */
export function partitionFlags(cmd: Command): Command {
  return cmd
    .option('-p, --partitions <n>', 'pipeline ranks (SMP partitions)', positiveInt('-p'))
    .option('-m, --microbatches <m>', 'microbatches per step', positiveInt('-m'))
    .option('--schedule <name>', 'gpipe, 1f1b, interleaved-1f1b, zb-h1, zbv (SMP: simple, interleaved); default 1f1b')
    .option('--virtual-stages <v>', 'stages per rank (interleaved-1f1b ≥ 2; zbv 2)', positiveInt('--virtual-stages'))
    .option('--active-microbatches <n>', 'microbatches in flight per rank: below the pipeline ranks a cap; above them, room for zb-h1/zbv to fill their bubble with memory', positiveInt('--active-microbatches'))
    .option('--batch <n>', 'samples per step per replica, split into the microbatches (default: one per microbatch)', positiveInt('--batch'))
    .option('--loss <kind>', 'auto, output, cross-entropy, mse', 'auto')
    .option('--memory-weight <w>', 'SMP memory_weight in [0, 1]: balance memory (1) or time (0); default 0.8')
    .option('--device <name>', `cost profile: ${PROFILE_NAMES.join(', ')} (default h100)`)
    .option('--dtype <policy>', 'fp32, bf16 (mixed precision), or fp16 (mixed precision with dynamic loss scaling)')
    .option('--assign <regex=stage>', 'place nodes whose name matches on a stage (repeatable)', collect)
    .option('--auto-partition', 'place unannotated nodes automatically (default)')
    .option('--no-auto-partition', 'put unannotated nodes on --default-partition')
    .option('--default-partition <k>', 'stage for unannotated nodes when auto partitioning is off (default 0)')
    .option('--profile <file>', 'measured op times (cleave profile) that override the estimates')
    .option('--config <file>', 'SMP-style JSON config (partitions, microbatches, pipeline, auto_partition, …): it beats the defaults, and flags given here beat it')
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding);
}

export function lossFromFlag(loss: string): LossSpec | 'auto' {
  if (loss === 'auto') return 'auto';
  if (loss === 'cross-entropy' || loss === 'mse' || loss === 'output') return { kind: loss };
  throw new CleaveError(`--loss must be one of auto, output, cross-entropy, mse; got '${loss}'`);
}

/**
 * One value from wherever it was given, with the name to blame it by: the command line's flag
 * wins, then the --config file, then the model file's own config; `undefined` leaves the default.
 */
interface Given<T> { value: T; from: string; shown?: string }

const asNumber = (v: string): number => (v.trim() === '' ? NaN : Number(v));
/** A flag's value as typed, for its error message (a config's is shown as JSON). */
const shownAs = <T>(g: Given<T> | undefined, typed: string | undefined): Given<T> | undefined => (g && g.from.startsWith('-') && typed !== undefined ? { ...g, shown: `'${typed}'` } : g);

type Layer = { config: SmpConfig; name: (key: string) => string };

/**
 * Command-line flags over the config file over `modelConfig` (a model file's own config) over
 * defaults: one rule for every key, and every value checked the same way whichever of the three it
 * came from, its error naming where (`-p`, or `"partitions" in cfg.json`). `partition` takes the
 * same, with a fixed schedule (the stages depend on it) and one microbatch by default.
 */
export function compileOptions(model: string, o: CompileFlags, modelConfig: SmpConfig = {}, command: 'compile' | 'partition' = 'compile'): CompileOptions & { schedule: ScheduleName | 'auto' } {
  const layers: Layer[] = [
    ...(o.config ? [{ config: readSmpConfig(o.config), name: (k: string) => `"${k}" in ${o.config}` }] : []),
    { config: modelConfig, name: (k: string) => `"${k}" in the model's config` },
  ];
  function given<K extends keyof SmpConfig>(flag: string, fromFlag: SmpConfig[K] | undefined, key: K): Given<NonNullable<SmpConfig[K]>> | undefined {
    if (fromFlag !== undefined) return { value: fromFlag as NonNullable<SmpConfig[K]>, from: flag };
    for (const l of layers) if (l.config[key] !== undefined) return { value: l.config[key] as NonNullable<SmpConfig[K]>, from: l.name(key) };
    return undefined;
  }
  const int = (g: Given<number> | undefined, min: number, what: string): number | undefined => {
    if (g && (!Number.isSafeInteger(g.value) || g.value < min)) throw new CleaveError(`${g.from} must be ${what} (an integer ≥ ${min}), got ${g.shown ?? JSON.stringify(g.value)}`);
    return g?.value;
  };
  const oneOf = (g: Given<string> | undefined, allowed: readonly string[]): string | undefined => {
    if (g && !allowed.includes(g.value.toLowerCase())) throw new CleaveError(`${g.from} must be one of ${allowed.join(', ')}; got '${g.value}'`);
    return g?.value.toLowerCase();
  };

  const partitions = int(given('-p', o.partitions, 'partitions'), 1, 'a number of pipeline stages');
  if (partitions === undefined) throw new CleaveError('give the number of pipeline stages with -p N (or "partitions" in --config)');
  const microbatches = int(given('-m', o.microbatches, 'microbatches'), 1, 'a number of microbatches') ?? (command === 'partition' ? 1 : undefined);
  if (microbatches === undefined) throw new CleaveError('give the number of microbatches with -m M (or "microbatches" in --config)');
  const pipeline = given('--schedule', o.schedule, 'pipeline');
  if (pipeline?.value === 'auto' && command === 'partition') throw new CleaveError(`${pipeline.from} auto: the stages depend on the schedule; give one (gpipe, 1f1b, interleaved-1f1b, zb-h1, zbv), or let cleave compile pick`);
  const schedule = !pipeline ? '1f1b' : pipeline.value === 'auto' ? 'auto' : (() => {
    try {
      return scheduleName(pipeline.value);
    } catch (e) {
      throw new CleaveError(`${pipeline.from}: ${(e as Error).message}`);
    }
  })();
  const virtualStages = int(given('--virtual-stages', o.virtualStages, 'virtual_stages'), 1, 'a number of stages per rank');
  const activeMicrobatches = int(given('--active-microbatches', o.activeMicrobatches, 'active_microbatches'), 1, 'a number of microbatches in flight');
  const device = oneOf(given('--device', o.device, 'device'), PROFILE_NAMES);
  const dtype = oneOf(given('--dtype', o.dtype, 'dtype'), DTYPE_POLICIES) ?? 'fp32';
  const autoPartition = given('--auto-partition', o.autoPartition, 'auto_partition')?.value;
  const dflt = shownAs(given('--default-partition', o.defaultPartition === undefined ? undefined : asNumber(o.defaultPartition), 'default_partition'), o.defaultPartition);
  const defaultPartition = int(dflt, 0, 'a stage number');
  if (dflt && autoPartition !== false) throw new CleaveError(`${dflt.from} applies when auto partitioning is off: add --no-auto-partition (or "auto_partition": false in --config)`);
  if (dflt && defaultPartition! >= partitions * (virtualStages ?? 1)) throw new CleaveError(`${dflt.from} is stage ${defaultPartition}; there are ${partitions * (virtualStages ?? 1)} stages (0–${partitions * (virtualStages ?? 1) - 1})`);
  const dpGiven = given('--dp', o.dp, 'dp');
  const dp = int(dpGiven, 1, 'a data-parallel degree') ?? 1;
  const ddp = given('--dp', undefined, 'ddp');
  if (ddp?.value === true && !dpGiven) throw new CleaveError(`${ddp.from} is true: give the data-parallel degree with --dp D (or "dp" in --config)`);
  // SMP's "ddp": false is no data parallelism; a degree above 1 beside it in a config says both.
  if (ddp?.value === false && dp > 1 && dpGiven!.from !== '--dp') throw new CleaveError(`${ddp.from} is false but ${dpGiven!.from} is ${dp}: data parallelism is either off or of degree ${dp}`);
  const placementGiven = given('--placement', o.placement, 'placement_strategy');
  const placement = (oneOf(placementGiven, ['cluster', 'spread']) ?? 'cluster') as 'cluster' | 'spread';
  if (placementGiven?.from === '--placement' && dp === 1) throw new CleaveError('--placement arranges data-parallel replicas: it needs --dp 2 or more');
  const mw = shownAs(given('--memory-weight', o.memoryWeight === undefined ? undefined : asNumber(o.memoryWeight), 'memory_weight'), o.memoryWeight);
  if (mw && !(Number.isFinite(mw.value) && mw.value >= 0 && mw.value <= 1)) throw new CleaveError(`${mw.from} must be a number in [0, 1], got ${mw.shown ?? mw.value}`);
  // A list given on the command line replaces the config's, as any other key's value does.
  const assign = given('--assign', o.assign?.length ? o.assign : undefined, 'assign')?.value ?? [];
  const optimizer = given('--optimizer', undefined, 'optimizer');
  const optimizerConfig = (() => {
    try {
      return optimizerFromFlags(o, optimizer?.value);
    } catch (e) {
      if (e instanceof CleaveError && optimizer && o.optimizer === undefined) throw new CleaveError(`${optimizer.from}: ${e.message}`);
      throw e;
    }
  })();
  return {
    model, loss: lossFromFlag(o.loss), partitions, microbatches, batch: o.batch, schedule,
    virtualStages, dp, placement, activeMicrobatches,
    memoryWeight: mw?.value, autoPartition, defaultPartition,
    assign, device, policy: dtype as DtypePolicy,
    optimizerConfig,
    measured: o.profile ? readMeasuredProfile(o.profile) : undefined, dims: o.dim,
  };
}
