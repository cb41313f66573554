import { CleaveError } from '../../src/core/errors.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { tensor } from '../../src/core/ir/tensor.js';
import type { NodeP } from '../../src/core/onnx/proto.js';

// ONNX sequences have no place in cleave's IR (a value is one tensor). The one use exporters make of
// them in the models people train is a split read back element by element: torch.onnx's dynamo
// exporter, unoptimized, writes `q, k, v = x.split(d, dim=2)` as SplitToSequence and a SequenceAt
// per part. The importer takes that pattern as the Split it is: each SequenceAt becomes the part it
// names. Any other use of a sequence is refused, naming the node.

/** The ops the importer lowers here rather than through the registry. */
export const SEQUENCE_OPS = new Set(['SplitToSequence', 'SequenceAt']);

/** What the node loop needs from the importer to lower a sequence op. */
export interface SequenceHost {
  readonly g: Graph;
  readonly env: Map<string, Value>;
  /** Imports a synthesized ONNX node as if the file had it (shape inference, folding, metadata). */
  importNode(n: NodeP): void;
  readonly where: (n: NodeP) => string;
}

const intAttr = (n: NodeP, name: string, d: number): number => {
  const a = n.attribute?.find((x) => x.name === name);
  return a?.i === undefined || a.i === null ? d : Number(a.i);
};

/** The part sizes of a SplitToSequence of a dimension of `size`: the split input as ONNX defines it. */
function partSizes(split: Value | undefined, size: number, where: string): number[] {
  if (!split) return Array.from({ length: size }, () => 1);
  if (split.kind !== 'const' || !split.data) throw new CleaveError(`${where}: the split ('${split.name}') must be a constant; it is computed at run time`);
  const d = Array.from(split.data.data, Number);
  if (split.data.shape.length === 0) {
    const c = d[0]!;
    if (!Number.isInteger(c) || c < 1) throw new CleaveError(`${where}: a split into parts of ${c} elements: the size must be a positive integer`);
    return Array.from({ length: Math.ceil(size / c) }, (_, i) => Math.min(c, size - i * c));
  }
  if (d.some((x) => !Number.isInteger(x) || x < 0) || d.reduce((a, b) => a + b, 0) !== size) {
    throw new CleaveError(`${where}: split sizes [${d.join(', ')}] must be whole numbers that sum to the axis size ${size}`);
  }
  return d;
}

/**
 * Lowers one sequence node: SplitToSequence into a Split (and a Squeeze per part where keepdims is
 * 0 and no split is given), remembered under the sequence's name; SequenceAt into the part.
 */
export function lowerSequenceNode(h: SequenceHost, n: NodeP, parts: Map<string, Value[]>): void {
  const where = h.where(n);
  const [inName, splitName] = n.input ?? [];
  if (n.opType === 'SplitToSequence') {
    const x = h.env.get(inName ?? '');
    if (!x) throw new CleaveError(`${where}: reads '${inName}', which no node, input or initializer defines`);
    const r = x.shape.length, axis0 = intAttr(n, 'axis', 0), axis = axis0 < 0 ? axis0 + r : axis0;
    if (axis < 0 || axis >= r) throw new CleaveError(`${where}: axis ${axis0} is outside the ${r} axes of its input [${x.shape.join(', ')}]`);
    const size = x.shape[axis];
    if (typeof size !== 'number') throw new CleaveError(`${where}: the split axis ${axis} of [${x.shape.join(', ')}] must be static`);
    const split = splitName ? h.env.get(splitName) : undefined;
    if (splitName && !split) throw new CleaveError(`${where}: reads '${splitName}', which no node, input or initializer defines`);
    const sizes = partSizes(split, size, where);
    const seq = n.output?.[0] ?? '';
    const sizesName = h.g.uniqueName(`${seq}__sizes`), axesName = h.g.uniqueName(`${seq}__axis`);
    h.env.set(sizesName, h.g.addConst(sizesName, tensor('int64', [sizes.length], sizes)));
    const outs = sizes.map((_, i) => h.g.uniqueName(`${seq}__${i}`));
    h.importNode({ ...n, opType: 'Split', input: [inName!, sizesName], output: outs, attribute: [{ name: 'axis', type: 2, i: axis }] as NodeP['attribute'] });
    let vals = outs.map((o) => h.env.get(o)!);
    // keepdims = 0 takes effect only without a split input (ONNX): parts of one element lose the axis.
    if (!split && intAttr(n, 'keepdims', 1) === 0) {
      h.env.set(axesName, h.g.addConst(axesName, tensor('int64', [1], [axis])));
      vals = outs.map((o, i) => {
        const sq = h.g.uniqueName(`${o}__squeezed`);
        h.importNode({ name: `${n.name}_squeeze_${i}`, opType: 'Squeeze', input: [o, axesName], output: [sq], attribute: [] });
        return h.env.get(sq)!;
      });
    }
    parts.set(seq, vals);
    return;
  }
  const seq = parts.get(inName ?? '');
  if (!seq) throw new CleaveError(`${where}: reads the sequence '${inName}', which is not a SplitToSequence: cleave imports sequences only as a split read back part by part`);
  const pos = h.env.get(splitName ?? '');
  if (!pos || pos.kind !== 'const' || !pos.data || pos.data.data.length !== 1) throw new CleaveError(`${where}: the position must be one constant integer`);
  const p = Number(pos.data.data[0]), i = p < 0 ? p + seq.length : p;
  if (!Number.isInteger(p) || i < 0 || i >= seq.length) throw new CleaveError(`${where}: position ${p} is outside the sequence's ${seq.length} parts`);
  h.env.set(n.output?.[0] ?? '', seq[i]!);
}
