import { CleaveError } from '../errors.js';
import type { Graph } from './graph.js';
import { topoOrder } from './order.js';

/**
 * Checks the invariants every pass relies on: unique names, SSA (one producer per value, producer
 * lists true), every input defined by the graph, acyclic, nodes in topological order.
 */
export function validateGraph(g: Graph): void {
  const where = `graph '${g.name}'`;
  const names = new Set<string>();
  for (const n of g.nodes) {
    if (names.has(n.name)) throw new CleaveError(`${where}: node name '${n.name}' is used twice`);
    names.add(n.name);
  }
  const producedBy = new Map<string, string>();
  for (const n of g.nodes) {
    for (const o of n.outputs) {
      const prev = producedBy.get(o.name);
      if (prev) throw new CleaveError(`${where}: value '${o.name}' is produced by both '${prev}' and '${n.name}' (not SSA)`);
      if (o.kind !== 'node' || o.producer !== n) throw new CleaveError(`${where}: value '${o.name}' does not record '${n.name}' as its producer`);
      if (g.values.get(o.name) !== o) throw new CleaveError(`${where}: value '${o.name}' of node '${n.name}' is not registered in the graph`);
      producedBy.set(o.name, n.name);
    }
  }
  for (const n of g.nodes) {
    for (const v of n.inputs) {
      if (!v) continue;
      if (g.values.get(v.name) !== v) throw new CleaveError(`${where}: node '${n.name}' reads '${v.name}', which the graph does not define`);
      if (!v.users.includes(n)) throw new CleaveError(`${where}: value '${v.name}' does not list its user '${n.name}'`);
      if (v.kind === 'node' && !producedBy.has(v.name)) throw new CleaveError(`${where}: node '${n.name}' reads '${v.name}', which no node produces`);
    }
  }
  for (const v of g.outputs) {
    if (g.values.get(v.name) !== v) throw new CleaveError(`${where}: output '${v.name}' is not defined`);
  }
  const nodeOf = (valueName: string): string | undefined => producedBy.get(valueName);
  // Throws naming the nodes of any cycle, before the order check below would name only one edge.
  topoOrder(g.nodes, (n) => n.name, (n) => n.inputs.flatMap((v) => (v ? [nodeOf(v.name) ?? ''] : [])), where);
  const pos = new Map(g.nodes.map((n, i) => [n.name, i]));
  for (const n of g.nodes) {
    for (const v of n.inputs) {
      const p = v && v.producer;
      if (p && pos.get(p.name)! > pos.get(n.name)!) {
        throw new CleaveError(`${where}: node '${n.name}' comes before '${p.name}', which produces its input '${v.name}'`);
      }
    }
  }
}
