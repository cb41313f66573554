import type { Command } from 'commander';
import type { LossSpec } from '../../compiler/autodiff/loss.js';
import type { CompileOptions } from '../../compiler/compile.js';
import { type ScheduleName, scheduleName } from '../../compiler/cost/memory.js';
import { DTYPE_POLICIES, type DtypePolicy, readMeasuredProfile } from '../../compiler/cost/model.js';
import { PROFILE_NAMES } from '../../compiler/cost/profiles.js';
import { type SmpConfig, readSmpConfig } from '../api/config.js';
import { CleaveError } from '../errors.js';
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
    .option('--config <file>', 'SMP-style JSON config (partitions, microbatches, pipeline, auto_partition, …); flags override it')
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding);
}

export function lossFromFlag(loss: string): LossSpec | 'auto' {
  if (loss === 'auto') return 'auto';
  if (loss === 'cross-entropy' || loss === 'mse' || loss === 'output') return { kind: loss };
  throw new CleaveError(`--loss must be one of auto, output, cross-entropy, mse; got '${loss}'`);
}

function numberIn(flag: string, v: string | undefined, lo: number, hi: number): number | undefined {
  if (v === undefined) return undefined;
  const n = v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(n) || n < lo || n > hi) throw new CleaveError(`${flag} must be a number in [${lo}, ${hi}], got '${v}'`);
  return n;
}

/**
 * Command-line flags over the config file over `modelConfig` (a model file's own config) over
 * defaults. `partition` takes the same, with a fixed schedule (the stages depend on it) and one
 * microbatch by default.
 */
export function compileOptions(model: string, o: CompileFlags, modelConfig: SmpConfig = {}, command: 'compile' | 'partition' = 'compile'): CompileOptions & { schedule: ScheduleName | 'auto' } {
  const c: SmpConfig = { ...modelConfig, ...(o.config ? readSmpConfig(o.config) : {}) };
  const partitions = o.partitions ?? c.partitions;
  if (partitions === undefined) throw new CleaveError('give the number of pipeline stages with -p N (or "partitions" in --config)');
  const microbatches = o.microbatches ?? c.microbatches ?? (command === 'partition' ? 1 : undefined);
  if (microbatches === undefined) throw new CleaveError('give the number of microbatches with -m M (or "microbatches" in --config)');
  const pipeline = o.schedule ?? c.pipeline ?? '1f1b';
  if (pipeline === 'auto' && command === 'partition') throw new CleaveError(`${o.schedule ? '--schedule' : '"pipeline"'} auto: the stages depend on the schedule; give one (gpipe, 1f1b, interleaved-1f1b, zb-h1, zbv), or let cleave compile pick`);
  const schedule = pipeline === 'auto' ? 'auto' : (() => {
    try {
      return scheduleName(pipeline);
    } catch (e) {
      throw new CleaveError(`${o.schedule ? '--schedule' : '"pipeline"'}: ${(e as Error).message}`);
    }
  })();
  const device = o.device ?? c.device;
  if (device !== undefined && !(PROFILE_NAMES as readonly string[]).includes(device.toLowerCase())) throw new CleaveError(`${o.device ? '--device' : '"device"'} must be one of ${PROFILE_NAMES.join(', ')}; got '${device}'`);
  const dtype = o.dtype ?? c.dtype ?? 'fp32';
  if (!(DTYPE_POLICIES as readonly string[]).includes(dtype)) throw new CleaveError(`--dtype must be ${DTYPE_POLICIES.join(', ')}; got '${dtype}'`);
  const autoPartition = o.autoPartition ?? c.auto_partition;
  const defaultPartition = o.defaultPartition === undefined ? c.default_partition : (() => {
    const k = Number(o.defaultPartition);
    if (!Number.isInteger(k) || k < 0) throw new CleaveError(`--default-partition must be a stage number ≥ 0, got '${o.defaultPartition}'`);
    return k;
  })();
  if (o.defaultPartition !== undefined && autoPartition !== false) throw new CleaveError('--default-partition applies when auto partitioning is off: add --no-auto-partition (or "auto_partition": false in --config)');
  const dp = o.dp ?? c.dp ?? 1;
  if (c.ddp === true && o.dp === undefined && c.dp === undefined) throw new CleaveError('"ddp": true needs the data-parallel degree: give --dp D (or "dp" in --config)');
  const placement = o.placement ?? c.placement_strategy ?? 'cluster';
  if (placement !== 'cluster' && placement !== 'spread') throw new CleaveError(`--placement must be cluster or spread; got '${placement}'`);
  if (o.placement !== undefined && dp === 1) throw new CleaveError('--placement arranges data-parallel replicas: it needs --dp 2 or more');
  const optimizerConfig = optimizerFromFlags(o, c.optimizer);
  return {
    model, loss: lossFromFlag(o.loss), partitions, microbatches, batch: o.batch, schedule,
    virtualStages: o.virtualStages ?? c.virtual_stages, dp, placement, activeMicrobatches: o.activeMicrobatches ?? c.active_microbatches,
    memoryWeight: numberIn('--memory-weight', o.memoryWeight, 0, 1) ?? c.memory_weight, autoPartition, defaultPartition,
    assign: [...(c.assign ?? []), ...(o.assign ?? [])], device: device?.toLowerCase(), policy: dtype as DtypePolicy,
    optimizerConfig,
    measured: o.profile ? readMeasuredProfile(o.profile) : undefined, dims: o.dim,
  };
}
