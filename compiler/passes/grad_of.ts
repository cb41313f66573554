import type { Graph } from '../../src/core/ir/graph.js';

/**
 * After a fusion pass: backward nodes that named a folded node as what they differentiate
 * (`meta.gradOf`, which the partitioner groups work by) name the node that does its work now.
 * `into` maps a removed node's name to the node that absorbed it (possibly removed in turn).
 */
export function redirectGradOf(g: Graph, into: ReadonlyMap<string, string>): void {
  const live = new Set(g.nodes.map((x) => x.name));
  const survivor = (name: string): string => {
    let at = name;
    while (!live.has(at) && into.has(at)) at = into.get(at)!;
    return at;
  };
  for (const x of g.nodes) {
    const of = x.meta['gradOf'];
    if (typeof of === 'string' && !live.has(of)) x.meta['gradOf'] = survivor(of);
  }
}
