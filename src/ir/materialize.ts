import { CleaveError } from '../errors.js';
import type { Graph, Value } from './graph.js';
import { type Tensor, roundToDtype, tensor } from './tensor.js';
import { Rng } from '../util/random.js';

/** Gives a lazy parameter its data, from its init spec (seeded, so every rank makes the same). */
export function materialize(v: Value): Tensor {
  if (v.data) return v.data;
  if (!v.init) throw new CleaveError(`parameter '${v.name}' has neither data nor an initializer`);
  const shape = v.shape as number[];
  const t = tensor(v.dtype, shape);
  const init = v.init;
  if (init.kind === 'ones') t.data.fill(1);
  else if (init.kind !== 'zeros') {
    const rng = new Rng(init.seed);
    for (let i = 0; i < t.data.length; i++) t.data[i] = init.kind === 'normal' ? init.std * rng.normal() : init.bound * (2 * rng.next() - 1);
  }
  v.data = roundToDtype(t);
  return v.data;
}

/** Materializes every lazy parameter of the graph. */
export function materializeAll(g: Graph): void {
  for (const v of g.params()) materialize(v);
}
