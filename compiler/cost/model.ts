import { readFileSync } from 'node:fs';
import { CleaveError } from '../../src/errors.js';
import { type DType, dtypeBytes, dtypeFromOnnx, isFloat } from '../../src/ir/dtype.js';
import type { Attrs, Node } from '../../src/ir/graph.js';
import { type Shape, formatShape } from '../../src/ir/shape.js';
import type { Plan, PlanNode } from '../../src/plan/types.js';
import { getOp } from '../../src/ops/index.js';
import type { DeviceProfile } from './profiles.js';

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

export interface CostModel {
  readonly device: DeviceProfile;
  readonly policy: DtypePolicy;
  /** Seconds one execution of the node takes. */
  nodeTime(n: Node): number;
  /** Bytes a value occupies under the dtype policy. */
  bytes(dtype: DType, elements: number): number;
  /** Seconds to move `bytes` to a pipeline neighbour. */
  transferTime(bytes: number, interHost?: boolean): number;
}

/**
 * time = max(FLOPs ÷ achievable FLOP/s for the compute dtype, bytes ÷ bandwidth) + launch overhead,
 * unless the measured profile has the node's signature. Views (Reshape and friends) cost nothing.
 */
export function costModel(device: DeviceProfile, policy: DtypePolicy = 'fp32', measured?: MeasuredProfile): CostModel {
  const half = policy !== 'fp32';
  const bytes = (dtype: DType, elements: number): number => elements * (half && isFloat(dtype) ? 2 : dtypeBytes(dtype));
  const rate = (dtype: DType): number => {
    if (half && isFloat(dtype)) return policy === 'fp16' ? device.flops.float16 : device.flops.bfloat16;
    return dtype === 'bfloat16' ? device.flops.bfloat16 : dtype === 'float16' ? device.flops.float16 : dtype === 'float64' ? device.flops.float64 : device.flops.float32;
  };
  return {
    device,
    policy,
    bytes,
    nodeTime(n) {
      if (measured) {
        const ms = measured.entries[opSignature(n)];
        if (ms !== undefined) return ms / 1000;
      }
      const def = getOp(n.op, `node '${n.name}'`);
      const c = def.cost({ node: n.name, inputs: n.inputs, numOutputs: n.outputs.length, attrs: n.attrs, consts: [] }, n.outputs);
      // Costs come in the graph's own dtypes; the policy rescales bytes of float tensors.
      const scale = half ? 0.5 : 1;
      const moved = n.outputs.some((o) => isFloat(o.dtype)) ? c.bytes * scale : c.bytes;
      if (def.view) return 0;
      const dtype = n.outputs[0]?.dtype ?? 'float32';
      return Math.max(c.flops / rate(dtype), moved / device.bandwidth) + device.launch;
    },
    transferTime(b, interHost = false) {
      return b === 0 ? 0 : device.link.latency + b / (interHost ? device.link.interHost : device.link.intraHost);
    },
  };
}
