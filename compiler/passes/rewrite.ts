import type { Graph, Node, NodeSpec, Value, ValueKind } from '../../src/core/ir/graph.js';
import type { Shape } from '../../src/core/ir/shape.js';

// Graph rewrites as rule tables, after tinygrad's PatternMatcher: a rule is a pattern over the
// values that produce a node's output, and a rewrite of what it matched. A table's rules run over
// the graph until none applies (a fixed point), so a new exporter spelling of something already
// fused is one more row, often a row that turns it into a spelling an existing row knows.

/** What a value must be: its producer's op and input patterns, its kind, a name to bind it by, a test. */
export interface Pat {
  /** The op (or one of the ops) of the node producing the value; absent: any value. */
  readonly op?: string | readonly string[];
  /** Patterns of the producer's inputs, one per input (a producer with more inputs does not match). */
  readonly inputs?: readonly Pat[];
  /** The two inputs may match in either order (Add, Mul). */
  readonly commute?: boolean;
  /** Binds the value under this name; a name bound twice must be the same value. */
  readonly name?: string;
  readonly kind?: ValueKind | readonly ValueKind[];
  /** A further test, with what is bound so far. */
  readonly test?: (v: Value, m: Match) => boolean;
  /**
   * An inner value may be read elsewhere too (its producer is then not among the matched nodes a
   * rewrite may drop). Inner values are by default read only by the pattern, so that the rewrite
   * can take their producers away.
   */
  readonly shared?: boolean;
}

/** What a pattern matched: bound values, the matched producers (root first), the root node. */
export interface Match {
  readonly root: Node;
  readonly values: Map<string, Value>;
  readonly nodes: Node[];
}

/** Where a rewrite adds nodes: just before the root, so the order stays topological. */
export interface Emitter {
  emit(spec: NodeSpec): Node;
  /** One node's single output. */
  value(op: string, inputs: readonly (Value | null)[], attrs: NodeSpec['attrs'], out: { dtype: Value['dtype']; shape: Shape; name?: string }): Value;
}

/**
 * A rule: a pattern of the root node's (first) output and what to do with a match. The rewrite
 * returns the value that takes the root output's place, `true` where it changed the graph in place,
 * or null where the match is not one it can rewrite after all.
 */
export interface Rule {
  readonly name: string;
  readonly pattern: Pat;
  readonly rewrite: (m: Match, g: Graph, at: Emitter) => Value | true | null;
}

export const bound = (m: Match, name: string): Value => {
  const v = m.values.get(name);
  if (!v) throw new Error(`pattern binds no value '${name}'`);
  return v;
};

// --- pattern constructors ---------------------------------------------------------------------

export const any = (name?: string, more: Omit<Pat, 'name'> = {}): Pat => ({ ...more, ...(name ? { name } : {}) });
export const op = (o: string | readonly string[], inputs?: readonly Pat[], more: Omit<Pat, 'op' | 'inputs'> = {}): Pat => ({ op: o, ...(inputs ? { inputs } : {}), ...more });
/** A constant scalar (one element), bound by `name`. */
export const scalar = (name: string): Pat => ({ name, kind: 'const', test: (v) => !!v.data && v.data.data.length === 1 });

// --- matching ---------------------------------------------------------------------------------

const opMatches = (want: string | readonly string[], got: string): boolean => (typeof want === 'string' ? want === got : want.includes(got));

function matchValue(g: Graph, p: Pat, v: Value | null, m: Match, root: boolean): boolean {
  if (!v) return false;
  if (p.kind && !(typeof p.kind === 'string' ? p.kind === v.kind : p.kind.includes(v.kind))) return false;
  if (p.op !== undefined) {
    const n = v.producer;
    if (v.kind !== 'node' || !n || !opMatches(p.op, n.op)) return false;
    if (!root && !p.shared && (v.users.length !== 1 || g.outputs.includes(v))) return false;
    if (p.inputs) {
      if (n.inputs.length !== p.inputs.length) return false;
      const mark = m.nodes.length, names = [...m.values.keys()];
      const undo = (): void => {
        m.nodes.length = mark;
        for (const k of [...m.values.keys()]) if (!names.includes(k)) m.values.delete(k);
      };
      if (!root && !p.shared) m.nodes.push(n);
      const inOrder = (order: readonly number[]): boolean => p.inputs!.every((q, i) => matchValue(g, q, n.inputs[order[i]!] ?? null, m, false));
      if (!inOrder(p.inputs.map((_, i) => i))) {
        undo();
        if (!(p.commute && p.inputs.length === 2)) return false;
        if (!root && !p.shared) m.nodes.push(n);
        if (!inOrder([1, 0])) { undo(); return false; }
      }
    } else if (!root && !p.shared) m.nodes.push(n);
  }
  if (p.name) {
    const was = m.values.get(p.name);
    if (was && was !== v) return false;
    m.values.set(p.name, v);
  }
  return !p.test || p.test(v, m);
}

/** The match of `p` at node `n`'s first output, or null. */
export function matchAt(g: Graph, p: Pat, n: Node): Match | null {
  const m: Match = { root: n, values: new Map(), nodes: [n] };
  return matchValue(g, p, n.outputs[0] ?? null, m, true) ? m : null;
}

/** Adds nodes just before `root`, in the order they are emitted (each also into `made`, where given). */
export function emitterBefore(g: Graph, root: Node, made?: Set<Node>): Emitter {
  const at: Emitter = {
    emit(spec) {
      const node = g.addNode({ scope: root.scope, meta: { ...root.meta }, ...spec });
      made?.add(node);
      // addNode appends; the new node belongs before the root that will read it (directly or not).
      g.nodes.splice(g.nodes.indexOf(node), 1);
      g.nodes.splice(g.nodes.indexOf(root), 0, node);
      return node;
    },
    value(o, inputs, attrs, out) {
      return at.emit({ op: o, inputs, attrs: attrs ?? {}, name: `${root.scope}${o}`, outputs: [{ name: g.uniqueName(out.name ?? `${root.outputs[0]!.name}__${o.toLowerCase()}`), dtype: out.dtype, shape: out.shape }] }).outputs[0]!;
    },
  };
  return at;
}

/** How often each rule of a table applied. */
export type RuleCounts = Map<string, number>;

/**
 * Runs `rules` over the graph to a fixed point: at each node (in order), the first rule whose
 * pattern matches and whose rewrite takes it; a replaced root output keeps its name, and whatever
 * only the replaced nodes read goes. Returns how often each rule applied.
 */
export function applyRules(g: Graph, rules: readonly Rule[], maxPasses = 32): RuleCounts {
  const counts: RuleCounts = new Map();
  const byOp = new Map<string, Rule[]>();
  const anyOp: Rule[] = [];
  for (const r of rules) {
    const o = r.pattern.op;
    if (o === undefined) anyOp.push(r);
    else for (const x of typeof o === 'string' ? [o] : o) byOp.set(x, [...(byOp.get(x) ?? []), r]);
  }
  // Rules of any op are tried in their place in the table, not after those of the node's op.
  const order = new Map(rules.map((r, i) => [r, i]));
  for (let pass = 0; pass < maxPasses; pass++) {
    let changed = false;
    for (const n of [...g.nodes]) {
      if (!g.nodes.includes(n) || !n.outputs.length) continue;
      for (const r of [...(byOp.get(n.op) ?? []), ...anyOp].sort((a, b) => order.get(a)! - order.get(b)!)) {
        const m = matchAt(g, r.pattern, n);
        if (!m) continue;
        const out = n.outputs[0]!;
        const made = new Set<Node>();
        const res = r.rewrite(m, g, emitterBefore(g, n, made));
        if (res === null) continue;
        if (res !== true && res !== out) {
          const name = out.name;
          // A graph output keeps its name, and so does the value replacing it where that is a graph
          // output already: a copy takes the name where the value cannot (an input, a constant, another output).
          const keeps = g.outputs.includes(res), copy = g.outputs.includes(out) && (keeps || res.kind !== 'node');
          // An Identity of that value is such a copy already (a rule removing Identity would not settle).
          if (copy && n.op === 'Identity' && n.inputs[0] === res) continue;
          const to = copy ? emitterBefore(g, n, made).value('Identity', [res], {}, { dtype: res.dtype, shape: res.shape }) : res;
          g.replaceAllUses(out, to);
          dropUnread(g, n);
          if (!g.values.has(name) && to.kind === 'node' && !(to === res && keeps)) g.renameValue(to, name);
          // The node now computing the root's output takes the root's name where it was made for it:
          // people name nodes of their model (--assign, partition annotations) as the exporter wrote them.
          const maker = to.producer;
          if (maker && made.has(maker) && !g.nodes.includes(n)) g.renameNode(maker, n.name);
        }
        counts.set(r.name, (counts.get(r.name) ?? 0) + 1);
        changed = true;
        break;
      }
    }
    if (!changed) return counts;
  }
  throw new Error(`rewrite rules did not settle after ${maxPasses} passes (${[...counts].map(([k, v]) => `${k} ×${v}`).join(', ')})`);
}

/** Removes `n` if nothing reads it, then whatever only it read, up the graph. */
export function dropUnread(g: Graph, n: Node): void {
  if (!g.nodes.includes(n) || n.outputs.some((o) => o.users.length || g.outputs.includes(o))) return;
  const ins = [...n.inputs];
  g.removeNode(n);
  for (const x of ins) {
    if (!x || x.users.length || g.outputs.includes(x)) continue;
    if (x.kind === 'node' && x.producer) dropUnread(g, x.producer);
    else if (x.kind === 'const') g.values.delete(x.name);
  }
}

/** Turns a parameter into a constant of the same name and data: a buffer the exporter folded into an initializer. */
export function freezeParam(g: Graph, p: Value): Value {
  if (p.kind !== 'param' || !p.data) return p;
  const name = p.name;
  const c = g.addConst(g.uniqueName(`${name}__frozen`), p.data);
  g.replaceAllUses(p, c);
  g.values.delete(name);
  g.renameValue(c, name);
  return c;
}
