import { CleaveError } from '../../src/core/errors.js';
import { dtypeBytes } from '../../src/core/ir/dtype.js';
import type { Graph, Node, Phase, Value } from '../../src/core/ir/graph.js';
import { numel } from '../../src/core/ir/shape.js';
import type { TrainingGraph } from '../autodiff/training.js';
import type { Partition } from '../partition/partition.js';

/** A stage's programs: the forward (with the loss) and the two halves of the backward, named as their phases. */
export type ProgramKind = Extract<Phase, 'forward' | 'backwardB' | 'backwardW'>;

/** One stage's three programs (forward, input-gradient, weight-gradient), as node lists. */
export interface StagePrograms {
  index: number;
  ppRank: number;
  forward: Node[];
  backwardB: Node[];
  backwardW: Node[];
  params: Value[];
  /** Gradient contributions this stage makes: parameter → the value to accumulate. */
  grads: { param: Value; value: Value }[];
}

export interface Boundary {
  id: number;
  value: Value;
  from: number;
  to: number;
  direction: 'activation' | 'gradient';
  bytes: number;
}

export interface Programs {
  graph: Graph;
  stages: StagePrograms[];
  boundaries: Boundary[];
  /** Node → stage (every node kept in a program). */
  stageOf: Map<Node, number>;
  /** Node → the program it belongs to. */
  programOf: Map<Node, ProgramKind>;
  /** Nodes dropped from programs: sums of a tied parameter's gradient parts (an all-reduce does them). */
  dropped: Set<Node>;
}

const programOfPhase = (phase: Phase | undefined): ProgramKind => (phase === 'backwardB' || phase === 'backwardW' ? phase : 'forward');

export const valueBytes = (v: Value): number => numel(v.shape, 1) * dtypeBytes(v.dtype);

/**
 * Cuts the training graph into stage programs along the partition: the values that cross between
 * stages become boundary tensors, and a parameter's gradient becomes one contribution per stage
 * that uses it, so tied weights need no cross-stage node.
 */
export function buildPrograms(t: TrainingGraph, part: Partition, rankOf: (stage: number) => number): Programs {
  const g = t.graph;
  const stageOf = new Map(part.stageOf);
  const dropped = new Set<Node>();
  const contributions = new Map<Value, Value[]>();
  for (const p of g.params()) {
    const d = t.grads.get(p.name);
    if (!d) continue;
    const prod = d.producer;
    // Gradient parts summed outside any node's rule are the parts of a parameter used in several places.
    if (prod && prod.op === 'Sum' && prod.meta['gradOf'] === undefined) {
      dropped.add(prod);
      contributions.set(p, prod.inputs.filter((v): v is Value => !!v));
    } else contributions.set(p, [d]);
  }
  const programOf = new Map<Node, ProgramKind>();
  const stages: StagePrograms[] = part.stages.map((s) => ({ index: s.index, ppRank: rankOf(s.index), forward: [], backwardB: [], backwardW: [], params: [], grads: [] }));
  for (const n of g.nodes) {
    if (dropped.has(n)) continue;
    const k = stageOf.get(n);
    if (k === undefined) throw new Error(`node '${n.name}' has no stage`);
    const prog = programOfPhase(n.meta['phase']);
    programOf.set(n, prog);
    stages[k]![prog].push(n);
  }
  for (const s of stages) {
    const seen = new Set<Value>();
    for (const n of [...s.forward, ...s.backwardB, ...s.backwardW]) for (const v of n.inputs) if (v?.kind === 'param' && !seen.has(v)) { seen.add(v); s.params.push(v); }
  }
  for (const [p, parts] of contributions) {
    for (const v of parts) {
      const k = v.producer ? stageOf.get(v.producer) : undefined;
      if (k === undefined) throw new CleaveError(`gradient part '${v.name}' of '${p.name}' is not computed on any stage`);
      stages[k]!.grads.push({ param: p, value: v });
      if (!stages[k]!.params.includes(p)) stages[k]!.params.push(p);
    }
  }
  // Boundary tensors: a value read on a stage other than its producer's.
  const boundaries: Boundary[] = [];
  const seen = new Set<string>();
  for (const n of g.nodes) {
    if (dropped.has(n)) continue;
    const to = stageOf.get(n)!;
    for (const v of n.inputs) {
      if (!v?.producer || dropped.has(v.producer)) continue;
      const from = stageOf.get(v.producer)!;
      if (from === to || seen.has(`${v.name}→${to}`)) continue;
      seen.add(`${v.name}→${to}`);
      const direction = programOf.get(v.producer) === 'forward' ? 'activation' : 'gradient';
      if ((direction === 'activation') !== (from < to)) {
        throw new CleaveError(`value '${v.name}' flows from stage ${from} to stage ${to} against the pipeline (${direction}); the partition is invalid`);
      }
      boundaries.push({ id: boundaries.length, value: v, from, to, direction, bytes: valueBytes(v) });
    }
  }
  return { graph: g, stages, boundaries, stageOf, programOf, dropped };
}
