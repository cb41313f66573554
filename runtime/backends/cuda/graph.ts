import { CleaveError } from '../../../src/errors.js';
import type { DType } from '../../../src/ir/dtype.js';
import { isFloat } from '../../../src/ir/dtype.js';
import type { Graph, Value } from '../../../src/ir/graph.js';
import type { Tensor } from '../../../src/ir/tensor.js';
import { getOp } from '../../../src/ops/index.js';
import type { DeviceTensor } from '../../../src/ops/registry.js';
import { checkFeeds } from '../cpu/interpreter.js';
import { Cuda } from './device.js';

/**
 * Runs a graph on the GPU node by node with the registry's CUDA kernels: inputs and weights are
 * uploaded (float tensors in `precision`), each node's outputs allocated, each intermediate freed
 * after its last reader, and the outputs downloaded. The reference path the plan runtime's
 * launch lists will be checked against.
 */
export function runGraphCuda(g: Graph, feeds: Readonly<Record<string, Tensor>>, precision: 'float32' | 'bfloat16' = 'float32', dev = new Cuda()): Map<string, Tensor> {
  checkFeeds(g, feeds);
  const as = (d: DType): DType => (isFloat(d) ? precision : d);
  const env = new Map<Value, DeviceTensor>();
  try {
    for (const v of g.inputs) env.set(v, dev.upload(feeds[v.name]!, as(v.dtype)));
    const lastUse = new Map<Value, number>();
    g.nodes.forEach((n, i) => n.inputs.forEach((v) => v && lastUse.set(v, i)));
    const read = (v: Value): DeviceTensor => {
      let t = env.get(v);
      if (!t) {
        if (!v.data) throw new CleaveError(`value '${v.name}' is read before it is computed`);
        t = dev.upload(v.data, as(v.dtype));
        env.set(v, t);
      }
      return t;
    };
    g.nodes.forEach((n, i) => {
      const def = getOp(n.op, `node '${n.name}'`);
      if (!def.cuda) throw new CleaveError(`node '${n.name}': op ${n.op} has no CUDA kernel yet`);
      const ins = n.inputs.map((v) => (v ? read(v) : null));
      const outs = n.outputs.map((o) => dev.alloc(as(o.dtype), o.shape as number[]));
      try {
        def.cuda(dev, ins, outs, n.attrs);
      } catch (e) {
        throw new CleaveError(`node '${n.name}' (${n.op}) on CUDA: ${(e as Error).message}`);
      }
      n.outputs.forEach((o, k) => env.set(o, outs[k]!));
      for (const v of n.inputs) {
        if (v && v.kind === 'node' && lastUse.get(v) === i && !g.outputs.includes(v)) {
          dev.free(env.get(v)!);
          env.delete(v);
        }
      }
    });
    const out = new Map<string, Tensor>();
    for (const v of g.outputs) out.set(v.name, dev.download(read(v)));
    return out;
  } finally {
    dev.freeAll();
  }
}
