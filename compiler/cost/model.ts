import { type DType, dtypeBytes, isFloat } from '../../src/core/ir/dtype.js';
import type { Node } from '../../src/core/ir/graph.js';
import { getOp } from '../../src/core/ops/index.js';
import type { DeviceProfile } from './profiles.js';

export { DTYPE_POLICIES, type DtypePolicy, type MeasuredProfile, opSignature, planNodeSignature, policyDtype, readMeasuredProfile, signatureOf } from '../../src/core/plan/signature.js';
import { type DtypePolicy, type MeasuredProfile, opSignature, policyDtype } from '../../src/core/plan/signature.js';

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
