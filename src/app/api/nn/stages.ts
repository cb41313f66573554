import { CleaveError } from '../../../core/errors.js';
import type { Graph, Node, Value } from '../../../core/ir/graph.js';

/** The module a node was recorded under, from its scope (`/h.0/attn/` → `module 'h.0.attn'`). */
export function moduleOf(n: Node): string {
  const path = n.scope.split('/').filter(Boolean).join('.');
  return path ? `module '${path}'` : "the model's own forward";
}

/**
 * Stages run in order, so a stage may only feed later ones. Checks that no node reads, directly or
 * through unannotated nodes, what a node of a later partition computed; the error names both
 * modules. With `defaultPartition` (auto partitioning off) unannotated nodes count as that partition.
 */
export function checkStageOrder(g: Graph, defaultPartition?: number): void {
  // Per value: the latest partition among the annotated nodes it depends on, and one such node.
  const latest = new Map<Value, { stage: number; node: Node }>();
  for (const n of g.nodes) {
    let from: { stage: number; node: Node } | undefined;
    for (const v of n.inputs) {
      const l = v ? latest.get(v) : undefined;
      if (l && (!from || l.stage > from.stage)) from = l;
    }
    const own = n.meta.partition ?? defaultPartition;
    if (own !== undefined && from && from.stage > own) {
      const direct = n.inputs.some((v) => v?.producer === from!.node);
      const ownWhy = n.meta.partition === undefined ? `default_partition ${own}` : `partition ${own}`;
      throw new CleaveError(`partitions out of order: ${moduleOf(n)} (${ownWhy}) uses what ${moduleOf(from.node)} computes on partition ${from.stage} `
        + `(node '${from.node.name}' ${direct ? '→' : '→ … →'} '${n.name}'); a stage may only feed later stages: put ${moduleOf(n)} in a partition ≥ ${from.stage}, or ${moduleOf(from.node)} in one ≤ ${own}`);
    }
    const mine = own !== undefined ? { stage: own, node: n } : from;
    if (mine) for (const o of n.outputs) latest.set(o, mine);
  }
}
