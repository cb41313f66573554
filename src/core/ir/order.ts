import { Graph as DiGraph, alg } from '@dagrejs/graphlib';
import { CleaveError } from '../errors.js';

/**
 * Stable topological order of named items: items already in order keep it (Kahn's algorithm over
 * the original positions). A cycle is an error naming every item in each cycle found.
 */
export function topoOrder<T>(items: readonly T[], nameOf: (t: T) => string, depsOf: (t: T) => readonly string[], what: string): T[] {
  const g = new DiGraph();
  const index = new Map<string, number>();
  items.forEach((t, i) => {
    // Two items of one name would merge into one that depends on itself: a "cycle" that is not one.
    const prev = index.get(nameOf(t));
    if (prev !== undefined) throw new CleaveError(`${what}: the name '${nameOf(t)}' is used twice (items #${prev} and #${i}); names must be unique`);
    index.set(nameOf(t), i);
    g.setNode(nameOf(t));
  });
  for (const t of items) for (const d of depsOf(t)) if (index.has(d) && d !== nameOf(t)) g.setEdge(d, nameOf(t));
  const selfLoops = items.filter((t) => depsOf(t).includes(nameOf(t))).map(nameOf);
  const cycles = alg.findCycles(g).map((c) => c.reverse());
  if (selfLoops.length || cycles.length) {
    const all = [...selfLoops.map((n) => [n]), ...cycles];
    throw new CleaveError(`${what} has a cycle: ${all.map((c) => c.join(' → ') + ' → ' + c[0]).join('; ')}`);
  }
  const indeg = new Map<string, number>();
  for (const n of g.nodes()) indeg.set(n, g.predecessors(n)?.length ?? 0);
  // A min-heap would be O(n log n); a sorted ready list is simpler and graphs here are thousands of nodes.
  const ready = items.map(nameOf).filter((n) => indeg.get(n) === 0);
  const out: T[] = [];
  while (ready.length) {
    ready.sort((a, b) => index.get(a)! - index.get(b)!);
    const n = ready.shift()!;
    out.push(items[index.get(n)!]!);
    for (const s of g.successors(n) ?? []) {
      const k = indeg.get(s)! - 1;
      indeg.set(s, k);
      if (k === 0) ready.push(s);
    }
  }
  return out;
}
