import { readFileSync } from 'node:fs';
import { CleaveError } from '../errors.js';
import { type DType, dtypeFromOnnx } from '../ir/dtype.js';
import type { Attrs, Node } from '../ir/graph.js';
import { type Shape, formatShape } from '../ir/shape.js';
import type { Plan, PlanNode } from './types.js';

// What the compiler and the runtime both name: the dtype policy a plan was compiled under, and the
// signature a node's measured time is keyed by (the runtime measures, the cost model reads).

/**
 * How tensors are held: 'fp32' trains in float32; 'bf16' computes and stores activations in
 * bfloat16 with float32 master weights (mixed precision), which halves bytes moved and runs matrix
 * work at the bf16 rate; 'fp16' does the same in float16, with dynamic loss scaling since its
 * range is narrow.
 */
export type DtypePolicy = 'fp32' | 'bf16' | 'fp16';
export const DTYPE_POLICIES: readonly DtypePolicy[] = ['fp32', 'bf16', 'fp16'];
/** The storage dtype of float tensors under a policy (undefined: the graph's own). */
export const policyDtype = (p: string): 'bfloat16' | 'float16' | undefined => (p === 'bf16' ? 'bfloat16' : p === 'fp16' ? 'float16' : undefined);

/** A measured profile (`cleave profile` writes one): op signature → milliseconds. */
export interface MeasuredProfile {
  device?: string;
  entries: Record<string, number>;
}

/** The key a measured time is stored under: op, input types (the graph's, before any dtype policy), attributes. */
export function signatureOf(op: string, inputs: readonly ({ readonly dtype: DType; readonly shape: Shape } | null)[], attrs: Attrs): string {
  const ins = inputs.map((v) => (v ? `${v.dtype}${formatShape(v.shape)}` : '_')).join(',');
  const a = Object.keys(attrs).sort().map((k) => `${k}=${JSON.stringify(attrs[k])}`).join(';');
  return `${op}(${ins}){${a}}`;
}

export function opSignature(n: Node): string {
  return signatureOf(n.op, n.inputs, n.attrs);
}

/** A plan node's signature: the one its training-graph node has, so a profile measured on plans feeds the partitioner. */
export function planNodeSignature(plan: Plan, n: PlanNode, attrs: Attrs): string {
  return signatureOf(n.op, n.inputs.map((i) => {
    if (i < 0) return null;
    const v = plan.values[i]!;
    return { dtype: dtypeFromOnnx(v.dtype, v.name), shape: v.shape };
  }), attrs);
}

export function readMeasuredProfile(file: string): MeasuredProfile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CleaveError(`${file}: not a readable JSON profile (${(e as Error).message})`);
  }
  const entries = (raw as { entries?: unknown }).entries;
  if (!entries || typeof entries !== 'object') throw new CleaveError(`${file}: a measured profile needs an "entries" object of signature → ms`);
  for (const [k, v] of Object.entries(entries)) {
    if (typeof v !== 'number' || !(v >= 0)) throw new CleaveError(`${file}: entry '${k}' must be a non-negative number of milliseconds`);
  }
  return raw as MeasuredProfile;
}
