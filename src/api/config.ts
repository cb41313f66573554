import { readFileSync } from 'node:fs';
import { CleaveError } from '../errors.js';

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
