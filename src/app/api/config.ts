import { readFileSync } from 'node:fs';
import type { CompileOptions } from '../../../compiler/compile.js';
import { type OptimizerFamily, scheduleName } from '../../../compiler/cost/memory.js';
import { DTYPE_POLICIES, type DtypePolicy } from '../../../compiler/cost/model.js';
import { CleaveError } from '../../core/errors.js';

/**
 * SMP's `modelparallel` parameters, as SMP users write them, plus cleave's own few. A config file is
 * JSON with these keys; command-line flags override it.
 */
export interface SmpConfig {
  partitions?: number;
  microbatches?: number;
  pipeline?: string;
  auto_partition?: boolean;
  default_partition?: number;
  memory_weight?: number;
  active_microbatches?: number;
  placement_strategy?: string;
  ddp?: boolean;
  /** cleave: stages per rank for interleaved schedules. */
  virtual_stages?: number;
  /** cleave: REGEX=STAGE placement rules. */
  assign?: string[];
  /** cleave: device profile for the cost model. */
  device?: string;
  optimizer?: string;
  /** cleave: 'fp32', 'bf16' or 'fp16' (mixed precision; fp16 with dynamic loss scaling). */
  dtype?: string;
  /** cleave: data-parallel degree (SMP derives it from the processes launched). */
  dp?: number;
}

const TYPES: Record<keyof SmpConfig, 'number' | 'string' | 'boolean' | 'strings'> = {
  partitions: 'number', microbatches: 'number', pipeline: 'string', auto_partition: 'boolean', default_partition: 'number',
  memory_weight: 'number', active_microbatches: 'number', placement_strategy: 'string', ddp: 'boolean',
  virtual_stages: 'number', assign: 'strings', device: 'string', optimizer: 'string', dtype: 'string', dp: 'number',
};

export function parseSmpConfig(raw: unknown, file: string): SmpConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new CleaveError(`${file}: a config is a JSON object of SMP parameters`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const type = TYPES[k as keyof SmpConfig];
    if (!type) throw new CleaveError(`${file}: unknown parameter '${k}' (known: ${Object.keys(TYPES).join(', ')})`);
    const ok = type === 'strings' ? Array.isArray(v) && v.every((x) => typeof x === 'string') : typeof v === type;
    if (!ok) throw new CleaveError(`${file}: '${k}' must be ${type === 'strings' ? 'a list of strings' : `a ${type}`}, got ${JSON.stringify(v)}`);
    out[k] = v;
  }
  return out as SmpConfig;
}

export function readSmpConfig(file: string): SmpConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new CleaveError(`${file}: no such file`);
  }
  try {
    return parseSmpConfig(JSON.parse(text), file);
  } catch (e) {
    if (e instanceof CleaveError) throw e;
    throw new CleaveError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** What an SMP config asks of the compiler; keys left out keep the compiler's defaults. */
export type ConfigCompileOptions = Required<Pick<CompileOptions, 'partitions' | 'microbatches' | 'schedule' | 'dp'>>
  & Pick<CompileOptions, 'virtualStages' | 'placement' | 'activeMicrobatches' | 'memoryWeight' | 'autoPartition' | 'defaultPartition' | 'assign' | 'device' | 'policy' | 'optimizer'>;

const OPTIMIZER_FAMILIES: readonly OptimizerFamily[] = ['sgd', 'sgd-momentum', 'adam', 'adamw'];

/**
 * The compile options of a script's config (`init({ config })`, `new DistributedModel(model, config)`),
 * checked with messages in the config's own terms. `device` defaults to `cpu`: the script runs on CPU ranks.
 */
export function compileOptionsOf(c: SmpConfig, where: string): ConfigCompileOptions {
  const int = (k: keyof SmpConfig, min: number): number | undefined => {
    const v = c[k] as number | undefined;
    if (v !== undefined && (!Number.isInteger(v) || v < min)) throw new CleaveError(`${where}: "${k}" must be an integer ≥ ${min}, got ${v}`);
    return v;
  };
  const partitions = int('partitions', 1) ?? 1;
  if (c.ddp === true && c.dp === undefined) throw new CleaveError(`${where}: "ddp": true needs the data-parallel degree: give "dp"`);
  const placement = c.placement_strategy ?? 'cluster';
  if (placement !== 'cluster' && placement !== 'spread') throw new CleaveError(`${where}: "placement_strategy" must be cluster or spread, got '${placement}'`);
  const policy = c.dtype ?? 'fp32';
  if (!(DTYPE_POLICIES as readonly string[]).includes(policy)) throw new CleaveError(`${where}: "dtype" must be one of ${DTYPE_POLICIES.join(', ')}, got '${policy}'`);
  const optimizer = c.optimizer ?? 'adamw';
  if (!(OPTIMIZER_FAMILIES as readonly string[]).includes(optimizer)) throw new CleaveError(`${where}: "optimizer" must be one of ${OPTIMIZER_FAMILIES.join(', ')}, got '${optimizer}'`);
  const dflt = int('default_partition', 0);
  if (dflt !== undefined && dflt >= partitions * (c.virtual_stages ?? 1)) throw new CleaveError(`${where}: "default_partition" ${dflt} is out of range: there are ${partitions * (c.virtual_stages ?? 1)} stages`);
  return {
    partitions, microbatches: int('microbatches', 1) ?? 1, dp: int('dp', 1) ?? 1,
    schedule: c.pipeline === 'auto' ? 'auto' : scheduleName(c.pipeline ?? '1f1b'),
    virtualStages: int('virtual_stages', 1), placement, activeMicrobatches: int('active_microbatches', 1),
    memoryWeight: c.memory_weight, autoPartition: c.auto_partition, defaultPartition: dflt, assign: c.assign,
    device: c.device ?? 'cpu', policy: policy as DtypePolicy, optimizer: optimizer as OptimizerFamily,
  };
}
