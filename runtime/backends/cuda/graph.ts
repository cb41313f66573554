import { CleaveError } from '../../../src/core/errors.js';
import type { DType } from '../../../src/core/ir/dtype.js';
import { isFloat } from '../../../src/core/ir/dtype.js';
import type { Graph, Value } from '../../../src/core/ir/graph.js';
import type { Tensor } from '../../../src/core/ir/tensor.js';
import { getOp } from '../../../src/core/ops/index.js';
import type { DeviceTensor, OpDef } from '../../../src/core/ops/registry.js';
import type { Attrs } from '../../../src/core/ir/graph.js';
import { checkFeeds } from '../cpu/interpreter.js';
import { Cuda } from './device.js';

/**
 * Runs a graph on the GPU node by node with the registry's CUDA kernels: inputs and weights are
 * uploaded (float tensors in `precision`), each node's outputs allocated, each intermediate freed
 * after its last reader, and the outputs downloaded. The reference path the plan runtime's
 * launch lists will be checked against.
 */
export function runGraphCuda(g: Graph, feeds: Readonly<Record<string, Tensor>>, precision: 'float32' | 'bfloat16' | 'float16' = 'float32', dev = new Cuda()): Map<string, Tensor> {
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
      const ins = n.inputs.map((v) => (v ? read(v) : null));
      const outs = runCudaNode(dev, def, n.name, ins, n.outputs.map((o, k) => ({ dtype: def.keepDtype?.includes(k) ? o.dtype : as(o.dtype), shape: o.shape as number[] })), n.attrs);
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

/**
 * Runs one node: a view op whose input already has the output's dtype shares the input's memory;
 * any other node gets its registry kernel, writing into `placed[i]` where given (a slot of the
 * program's static workspace) and into fresh memory otherwise.
 */
export function runCudaNode(dev: Cuda, def: OpDef, name: string, ins: (DeviceTensor | null)[], outs: readonly { dtype: DType; shape: readonly number[] }[], attrs: Attrs,
  placed: readonly (DeviceTensor | undefined)[] = []): DeviceTensor[] {
  if (!def.cuda) throw new CleaveError(`node '${name}': op ${def.op} has no CUDA kernel yet`);
  const x = ins[0];
  if (def.view && x && outs.length === 1 && x.dtype === outs[0]!.dtype) return [dev.view(x, outs[0]!.shape)];
  const out = outs.map((o, i) => placed[i] ?? dev.alloc(o.dtype, o.shape));
  try {
    def.cuda(dev, ins, out, attrs);
  } catch (e) {
    for (const t of out) dev.free(t);
    throw new CleaveError(`node '${name}' (${def.op}) on CUDA: ${(e as Error).message}`);
  }
  return out;
}
