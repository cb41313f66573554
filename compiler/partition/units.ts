import type { TrainingGraph } from '../autodiff/training.js';
import type { Node, Value } from '../../src/core/ir/graph.js';
import { numel } from '../../src/core/ir/shape.js';
import { isFloat } from '../../src/core/ir/dtype.js';
import type { CostModel } from '../cost/model.js';

/**
 * The partitioner's atom: one forward (or loss) node with the backward nodes that differentiate it.
 * A stage is a contiguous run of units in topological order.
 */
export interface Unit {
  readonly index: number;
  readonly node: Node;
  readonly backward: Node[];
  fwd: number;
  /** Backward time, of which `wgt` is weight gradients (what ZB schedules defer). */
  bwd: number;
  wgt: number;
  /** Parameters (by index into `params`) the unit's nodes read. */
  params: number[];
  /** Bytes of this unit's outputs (and first-read inputs) that backward work reads: kept per microbatch. */
  stash: number;
  /** Largest transient tensor of the unit (forward or backward). */
  temp: number;
}

export interface Units {
  units: Unit[];
  params: Value[];
  paramElems: number[];
  /** cut[i]: bytes of activations crossing the boundary before unit i, forward direction. */
  cut: number[];
  /** cutGrad[i]: bytes of gradients crossing the same boundary backwards (float activations). */
  cutGrad: number[];
  /** Values crossing each boundary (for reports): boundary i → values. */
  crossing: (i: number) => Value[];
}

export function buildUnits(t: TrainingGraph, cost: CostModel): Units {
  const g = t.graph;
  const fwdNodes = g.nodes.filter((n) => n.meta['phase'] === 'forward' || n.meta['phase'] === 'loss');
  const unitOf = new Map<Node, number>();
  const units: Unit[] = fwdNodes.map((node, index) => {
    unitOf.set(node, index);
    return { index, node, backward: [], fwd: cost.nodeTime(node), bwd: 0, wgt: 0, params: [], stash: 0, temp: 0 };
  });
  const byName = new Map(fwdNodes.map((n, i) => [n.name, i]));
  // Backward nodes go with the forward node they differentiate; the rest (sums of a tied weight's
  // gradient parts) with the unit that produced their first input.
  for (const n of g.nodes) {
    if (unitOf.has(n)) continue;
    const of = n.meta['gradOf'];
    let u = typeof of === 'string' ? byName.get(of) : undefined;
    if (u === undefined) {
      const src = n.inputs.find((v) => v?.producer && unitOf.has(v.producer));
      u = src ? unitOf.get(src.producer!)! : units.length - 1;
    }
    unitOf.set(n, u);
    units[u]!.backward.push(n);
    units[u]!.bwd += cost.nodeTime(n);
    if (n.meta['phase'] === 'backwardW') units[u]!.wgt += cost.nodeTime(n);
  }
  const params = g.params();
  const pIndex = new Map(params.map((p, i) => [p, i]));
  const bytes = (v: Value): number => cost.bytes(v.dtype, numel(v.shape, 1));
  const forward = new Set(fwdNodes);
  const readByBackward = (v: Value): boolean => v.users.some((u) => !forward.has(u) && unitOf.has(u));
  const seenInput = new Set<Value>();
  for (const u of units) {
    for (const n of [u.node, ...u.backward]) {
      for (const v of n.inputs) {
        if (!v) continue;
        const pi = pIndex.get(v);
        if (pi !== undefined && !u.params.includes(pi)) u.params.push(pi);
        // Data inputs read by backward work are kept like activations by the unit that reads them first.
        if (v.kind === 'input' && n === u.node && !seenInput.has(v)) {
          seenInput.add(v);
          if (readByBackward(v)) u.stash += bytes(v);
        }
      }
      for (const o of n.outputs) {
        if (n === u.node && readByBackward(o)) u.stash += bytes(o);
        else u.temp = Math.max(u.temp, bytes(o));
      }
    }
  }
  // Boundary traffic: a value produced by unit p and last read (forward or backward) by unit q
  // crosses every boundary p+1 … q; its gradient comes back across the same boundaries.
  const N = units.length;
  const diff = new Float64Array(N + 2), diffGrad = new Float64Array(N + 2);
  const span = new Map<Value, [number, number]>();
  for (const u of units) {
    for (const o of u.node.outputs) {
      let last = u.index;
      for (const user of o.users) last = Math.max(last, unitOf.get(user) ?? last);
      if (last > u.index) {
        span.set(o, [u.index, last]);
        diff[u.index + 1]! += bytes(o);
        diff[last + 1]! -= bytes(o);
        if (isFloat(o.dtype)) {
          diffGrad[u.index + 1]! += bytes(o);
          diffGrad[last + 1]! -= bytes(o);
        }
      }
    }
  }
  const cut = new Array<number>(N + 1).fill(0), cutGrad = new Array<number>(N + 1).fill(0);
  let run = 0, runG = 0;
  for (let i = 0; i <= N; i++) {
    run += diff[i]!;
    runG += diffGrad[i]!;
    cut[i] = i === 0 || i === N ? 0 : run;
    cutGrad[i] = i === 0 || i === N ? 0 : runG;
  }
  const crossing = (i: number): Value[] => [...span].filter(([, [p, q]]) => p < i && q >= i).map(([v]) => v);
  return { units, params, paramElems: params.map((p) => numel(p.shape, 1)), cut, cutGrad, crossing };
}
