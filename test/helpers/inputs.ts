import type { Graph } from '../../src/core/ir/graph.js';
import { type Shape } from '../../src/core/ir/shape.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { Rng } from '../../src/core/util/random.js';

/** Random feeds for every graph input; symbolic dims take `batch`; int64 inputs are token ids below `vocab`. */
export function randomFeeds(g: Graph, batch: number, seed = 7, vocab = 64): Record<string, Tensor> {
  const rng = new Rng(seed);
  const feeds: Record<string, Tensor> = {};
  for (const v of g.inputs) {
    const shape = (v.shape as Shape).map((d) => (typeof d === 'number' ? d : batch));
    const t = tensor(v.dtype, shape);
    for (let i = 0; i < t.data.length; i++) t.data[i] = v.dtype === 'int64' || v.dtype === 'int32' ? rng.int(vocab) : rng.normal();
    feeds[v.name] = t;
  }
  return feeds;
}
