import { CleaveError } from '../errors.js';
import type { Graph, Value, ValueType } from './graph.js';
import { formatShape, isStatic } from './shape.js';
import { type Tensor, hostElementBytes, roundToDtype, tensor } from './tensor.js';
import { Rng } from '../util/random.js';

/**
 * Most host bytes the outputs of one node folded into constants at compile time may take: 1 GiB.
 * Folding runs a node's CPU kernel on the host before anything shows its result is worth keeping,
 * so an 11 KB file holding ConstantOfShape([2^40]) would otherwise take the machine's memory or
 * die in the allocator. What real models fold — shape vectors, index tables, causal masks,
 * position tables — is kilobytes to a few hundred MiB (a [1, 1, 8192, 8192] bool mask is 64 MiB);
 * a constant past 1 GiB is computed once per step at run time just as well, and on the host it
 * nears the 2^32-element typed-array limit for 1-byte types anyway.
 */
export const MAX_FOLD_BYTES = 2 ** 30;

/** Host bytes of a value of static type; Infinity where a dim is symbolic or the count is not a safe integer. */
export function hostBytes(t: ValueType): number {
  if (!isStatic(t.shape)) return Infinity;
  const n = t.shape.reduce((a, b) => a * b, 1);
  return Number.isSafeInteger(n) ? n * hostElementBytes(t.dtype) : Infinity;
}

/** Why folding a node with these outputs would materialize too much (naming the output), or undefined. */
export function foldTooLarge(where: string, names: readonly string[], outputs: readonly ValueType[]): string | undefined {
  const total = outputs.reduce((a, t) => a + hostBytes(t), 0);
  if (total <= MAX_FOLD_BYTES) return undefined;
  const k = outputs.reduce((best, t, i) => (hostBytes(t) > hostBytes(outputs[best]!) ? i : best), 0);
  const t = outputs[k]!;
  const size = Number.isFinite(total) ? `${(total / 2 ** 30).toFixed(1)} GiB` : 'more than a host tensor holds';
  return `${where}: output '${names[k] ?? k}' is a constant ${t.dtype}${formatShape(t.shape)} of ${size}, past the 1 GiB bound on constants folded at compile time`;
}

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
