// The rule engine of compiler/passes/rewrite.ts on small graphs: what a pattern matches (op, inputs,
// commute, names bound twice, inner values read elsewhere, graph outputs, kinds, tests), how a table
// runs to a fixed point (counts, first rule that takes the match, a table that does not settle),
// what a rewrite leaves behind (names, topological order, the same numbers), and freezeParam.
import { describe, expect, it } from 'vitest';
import {
  type Match, type Pat, type Rule, any, applyRules, bound, dropUnread, emitterBefore, freezeParam, matchAt, op, scalar,
} from '../../compiler/passes/rewrite.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

const ops = (g: Graph): string[] => g.nodes.map((n) => n.op);
const nodeOf = (v: Value): Node => v.producer!;

/** The graph computes the same outputs, under the same names, as `before` (a copy taken before the rewrite). */
function sameNumbers(before: Graph, after: Graph, feeds: Record<string, Tensor> = randomFeeds(before, 2, 3)): void {
  validateGraph(after);
  const want = runGraph(before, feeds), got = runGraph(after, feeds);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [k, t] of want) expect(maxRelError(got.get(k)!, t), k).toBeLessThanOrEqual(1e-6);
}

// The rule table of the fixed-point tests: −(−x) = x and x·1 = 1·x = x.
const isOne = (name: string): Pat => ({ ...scalar(name), test: (v) => v.kind === 'const' && v.data!.data.length === 1 && v.data!.data[0] === 1 });
const DOUBLE_NEG: Rule = { name: 'double neg', pattern: op('Neg', [op('Neg', [any('x')])]), rewrite: (m) => bound(m, 'x') };
const MUL_ONE: Rule = { name: 'mul by one', pattern: op('Mul', [any('x'), isOne('one')], { commute: true }), rewrite: (m) => bound(m, 'x') };

describe('matchAt', () => {
  it('matches an op with its inputs in order, binding names; a producer of another op or input count does not match', () => {
    const b = new ModelBuilder('m');
    const x = b.input('x', 'float32', [2, 3]);
    const n = b.op('Neg', [x]);
    const y = b.op('Mul', [n, b.scalar(2)]);
    b.output(y, 'y');
    const g = b.finish();
    const m = matchAt(g, op('Mul', [op('Neg', [any('x')], { name: 'neg' }), scalar('c')], { name: 'root' }), nodeOf(y))!;
    expect(m).not.toBeNull();
    expect(m.root).toBe(nodeOf(y));
    expect(bound(m, 'x')).toBe(x);
    expect(bound(m, 'neg')).toBe(n);
    expect(bound(m, 'root')).toBe(y);
    expect(bound(m, 'c').data!.data[0]).toBe(2);
    // The matched producers, root first.
    expect(m.nodes).toEqual([nodeOf(y), nodeOf(n)]);
    expect(() => bound(m, 'nothing')).toThrow(/binds no value 'nothing'/);

    expect(matchAt(g, op('Add', [any(), any()]), nodeOf(y))).toBeNull();
    expect(matchAt(g, op('Mul', [any()]), nodeOf(y))).toBeNull(); // Mul has two inputs
    expect(matchAt(g, op('Mul', [any(), any(), any()]), nodeOf(y))).toBeNull();
    expect(matchAt(g, op('Mul', [op('Relu', [any()]), any()]), nodeOf(y))).toBeNull();
    // One of several ops; no inputs pattern: any inputs.
    expect(matchAt(g, op(['Add', 'Mul']), nodeOf(y))).not.toBeNull();
    expect(matchAt(g, op(['Add', 'Sub']), nodeOf(y))).toBeNull();
    // any() matches any value, an input included, but an op pattern needs a node.
    expect(matchAt(g, op('Neg', [any('in', { kind: 'input' })]), nodeOf(n))).not.toBeNull();
    expect(matchAt(g, op('Neg', [op('Neg')]), nodeOf(n))).toBeNull();
  });

  it('commutative patterns match both input orders; without commute only the written order', () => {
    const b = new ModelBuilder('c');
    const x = b.input('x', 'float32', [4]);
    const two = b.scalar(2);
    const y1 = b.op('Mul', [b.op('Neg', [x]), two]);
    const y2 = b.op('Mul', [two, b.op('Neg', [x])]);
    b.output(b.op('Add', [y1, y2]), 'y');
    const g = b.finish();
    const pat = (commute: boolean): Pat => op('Mul', [op('Neg', [any('x')]), scalar('c')], { commute });
    for (const y of [y1, y2]) {
      const m = matchAt(g, pat(true), nodeOf(y))!;
      expect(m, y.name).not.toBeNull();
      expect(bound(m, 'x')).toBe(x);
      expect(bound(m, 'c')).toBe(two);
      expect(m.nodes.map((n) => n.op)).toEqual(['Mul', 'Neg']);
    }
    expect(matchAt(g, pat(false), nodeOf(y1))).not.toBeNull();
    expect(matchAt(g, pat(false), nodeOf(y2))).toBeNull();
  });

  it('a failed first order leaves no bindings or nodes behind for the swapped order', () => {
    const b = new ModelBuilder('u');
    const [p, q] = [b.input('p', 'float32', [3]), b.input('q', 'float32', [3])];
    const neg = b.op('Neg', [p]), relu = b.op('Relu', [q]);
    const y = b.op('Add', [neg, relu]);
    b.output(y, 'y');
    const g = b.finish();
    // In the written order 'a' binds Neg(p), then Relu fails the Neg pattern; swapped, 'a' is Relu(q).
    const m = matchAt(g, op('Add', [any('a'), op('Neg', [any('x')], { name: 'n' })], { commute: true }), nodeOf(y))!;
    expect(m).not.toBeNull();
    expect(bound(m, 'a')).toBe(relu);
    expect(bound(m, 'n')).toBe(neg);
    expect(bound(m, 'x')).toBe(p);
    expect(m.nodes).toEqual([nodeOf(y), nodeOf(neg)]);
    expect([...m.values.keys()].sort()).toEqual(['a', 'n', 'x']);
  });

  it('a name bound twice must be the same value', () => {
    const b = new ModelBuilder('twice');
    const [x, z] = [b.input('x', 'float32', [3]), b.input('z', 'float32', [3])];
    const same = b.op('Mul', [x, x]), other = b.op('Mul', [x, z]);
    const sq = b.op('Add', [b.op('Neg', [x]), x]);
    b.output(b.op('Add', [b.op('Add', [same, other]), sq]), 'y');
    const g = b.finish();
    const square = op('Mul', [any('a'), any('a')]);
    expect(bound(matchAt(g, square, nodeOf(same))!, 'a')).toBe(x);
    expect(matchAt(g, square, nodeOf(other))).toBeNull();
    // Across levels: −a + a, with a bound inside the Neg and again at the Add.
    const cancel = op('Add', [op('Neg', [any('a')]), any('a')], { commute: true });
    expect(bound(matchAt(g, cancel, nodeOf(sq))!, 'a')).toBe(x);
    expect(matchAt(g, op('Add', [op('Neg', [any('a')]), any('a')]), nodeOf(other.users[0]!.outputs[0]!))).toBeNull();
  });

  it('inner values read elsewhere do not match unless shared; shared producers are not among the matched nodes', () => {
    const b = new ModelBuilder('inner');
    const x = b.input('x', 'float32', [3]);
    const n1 = b.op('Neg', [x]);
    const n2 = b.op('Neg', [n1]);
    b.output(n2, 'y');
    b.output(b.op('Relu', [n1]), 'other'); // n1 is read twice
    const g = b.finish();
    expect(matchAt(g, op('Neg', [op('Neg', [any('x')])]), nodeOf(n2))).toBeNull();
    const m = matchAt(g, op('Neg', [op('Neg', [any('x')], { shared: true, name: 'inner' })]), nodeOf(n2))!;
    expect(m).not.toBeNull();
    expect(bound(m, 'inner')).toBe(n1);
    expect(m.nodes).toEqual([nodeOf(n2)]);
    // The root may be read any number of times.
    expect(matchAt(g, op('Neg', [any('x')]), nodeOf(n1))).not.toBeNull();
    // A value pattern without an op (any) may be read elsewhere: x is read by n1 alone here, n1 by two.
    expect(matchAt(g, op('Neg', [any('v')]), nodeOf(n2))).not.toBeNull();
  });

  it('graph outputs are never inner values (unless shared), even with one reader', () => {
    const b = new ModelBuilder('out');
    const x = b.input('x', 'float32', [3]);
    const n1 = b.op('Neg', [x]);
    b.output(n1, 'mid');
    b.output(b.op('Neg', [n1]), 'y');
    const g = b.finish();
    const root = nodeOf(g.outputs[1]!);
    expect(n1.users.length).toBe(1);
    expect(matchAt(g, op('Neg', [op('Neg', [any('x')])]), root)).toBeNull();
    expect(matchAt(g, op('Neg', [op('Neg', [any('x')], { shared: true })]), root)).not.toBeNull();
    // The root may itself be a graph output.
    expect(matchAt(g, op('Neg', [any('x')]), root)).not.toBeNull();
  });

  it('kind filters: one kind or a list; scalar wants a one-element constant', () => {
    const b = new ModelBuilder('kinds');
    const x = b.input('x', 'float32', [3]);
    const w = b.param('w', [3], 'ones');
    const c = b.constant(tensor('float32', [3], [1, 2, 3]), 'c');
    const s = b.scalar(5);
    const ps = b.param('ps', [], 'ones');
    const ys = [b.op('Mul', [x, w]), b.op('Mul', [x, c]), b.op('Mul', [x, s]), b.op('Mul', [x, ps]), b.op('Mul', [x, x])];
    b.output(ys.reduce((a, y) => b.op('Add', [a, y])), 'y');
    const g = b.finish();
    const kindOf = (p: Pat): boolean[] => ys.map((y) => matchAt(g, op('Mul', [any('x'), p]), nodeOf(y)) !== null);
    expect(kindOf(any('k', { kind: 'param' }))).toEqual([true, false, false, true, false]);
    expect(kindOf(any('k', { kind: 'const' }))).toEqual([false, true, true, false, false]);
    expect(kindOf(any('k', { kind: 'input' }))).toEqual([false, false, false, false, true]);
    expect(kindOf(any('k', { kind: ['param', 'const'] }))).toEqual([true, true, true, true, false]);
    expect(kindOf(scalar('k'))).toEqual([false, false, true, false, false]);
    // The kind of an op pattern's value is 'node'.
    expect(matchAt(g, op('Mul', [any(), any()], { kind: 'node' }), nodeOf(ys[0]!))).not.toBeNull();
    expect(matchAt(g, op('Mul', [any(), any()], { kind: 'const' }), nodeOf(ys[0]!))).toBeNull();
  });

  it('test predicates see the value and what is bound so far; a failing test fails the match', () => {
    const b = new ModelBuilder('tests');
    const x = b.input('x', 'float32', [2, 3]);
    const r = b.input('r', 'float32', [3]);
    const full = b.op('Add', [x, x]), bcast = b.op('Add', [x, r]);
    b.output(b.op('Add', [full, bcast]), 'y');
    const g = b.finish();
    const seen: [string, string[]][] = [];
    const sameShape = op('Add', [any('a'), any('b')], {
      test: (v, m: Match) => {
        seen.push([v.name, [...m.values.keys()]]);
        return bound(m, 'a').shape.join() === bound(m, 'b').shape.join();
      },
    });
    expect(matchAt(g, sameShape, nodeOf(full))).not.toBeNull();
    expect(matchAt(g, sameShape, nodeOf(bcast))).toBeNull();
    expect(seen).toEqual([[full.name, ['a', 'b']], [bcast.name, ['a', 'b']]]);
    // An inner test: the value is the one tested.
    const rank1 = op('Add', [any('a'), any('b', { test: (v) => v.shape.length === 1 })]);
    expect(matchAt(g, rank1, nodeOf(bcast))).not.toBeNull();
    expect(matchAt(g, rank1, nodeOf(full))).toBeNull();
  });
});

describe('applyRules', () => {
  it('runs a table to a fixed point and counts each rule: double Neg gone, Mul by 1 folded', () => {
    const b = new ModelBuilder('fold');
    const x = b.input('x', 'float32', [2, 3]);
    const one = b.scalar(1);
    let y = b.op('Relu', [x]);
    y = b.op('Neg', [b.op('Neg', [y])]);
    y = b.op('Mul', [y, one]);
    y = b.op('Neg', [b.op('Neg', [b.op('Neg', [b.op('Neg', [y])])])]);
    y = b.op('Mul', [b.scalar(1), y]);
    y = b.op('Mul', [y, b.scalar(2)]); // stays: 2 is not 1
    b.output(y, 'y');
    const g = b.finish();
    const before = cloneGraph(g);
    const counts = applyRules(g, [DOUBLE_NEG, MUL_ONE]);
    expect(Object.fromEntries(counts)).toEqual({ 'double neg': 3, 'mul by one': 2 });
    expect(ops(g)).toEqual(['Relu', 'Mul']);
    expect(g.outputs.map((o) => o.name)).toEqual(['y']);
    // The constants only the folded Muls read went with them.
    expect(g.constants().map((c) => c.data!.data[0])).toEqual([2]);
    sameNumbers(before, g);
    // At the fixed point a second run changes nothing.
    expect(applyRules(g, [DOUBLE_NEG, MUL_ONE]).size).toBe(0);
  });

  it('nodes a rewrite emits are visited by the next pass', () => {
    const b = new ModelBuilder('passes');
    const x = b.input('x', 'float32', [3]);
    b.output(b.op('Identity', [b.op('Relu', [x])]), 'y');
    const g = b.finish();
    const before = cloneGraph(g);
    // Identity(x) → −(−x), which the double-Neg row then removes (in a later pass: the emitted Negs
    // are not in the node list a pass walks).
    const spell: Rule = {
      name: 'identity as double neg',
      pattern: op('Identity', [any('x')]),
      rewrite: (m, _g, at) => {
        const x = bound(m, 'x'), t = { dtype: x.dtype, shape: x.shape };
        return at.value('Neg', [at.value('Neg', [x], {}, t)], {}, t);
      },
    };
    const counts = applyRules(g, [spell, DOUBLE_NEG]);
    expect(Object.fromEntries(counts)).toEqual({ 'identity as double neg': 1, 'double neg': 1 });
    expect(ops(g)).toEqual(['Relu']);
    expect(g.outputs[0]!.name).toBe('y');
    sameNumbers(before, g);
  });

  it('a rewrite returning null is skipped and the next rule tried; the first rule that takes a match wins', () => {
    const b = new ModelBuilder('null');
    const x = b.input('x', 'float32', [3]);
    b.output(b.op('Neg', [b.op('Neg', [x])]), 'y');
    const g = b.finish();
    const calls: string[] = [];
    const decline: Rule = { name: 'decline', pattern: op('Neg', [op('Neg', [any('x')])]), rewrite: () => { calls.push('decline'); return null; } };
    const take: Rule = { ...DOUBLE_NEG, rewrite: (m, g2, at) => { calls.push('take'); return DOUBLE_NEG.rewrite(m, g2, at); } };
    const later: Rule = { name: 'later', pattern: op('Neg', [op('Neg', [any('x')])]), rewrite: () => { calls.push('later'); return null; } };
    const counts = applyRules(g, [decline, take, later]);
    expect(calls).toEqual(['decline', 'take']);
    expect(Object.fromEntries(counts)).toEqual({ 'double neg': 1 });
    // The output would be the input x itself: an Identity keeps the name 'y'.
    expect(ops(g)).toEqual(['Identity']);
    expect(g.outputs[0]!.name).toBe('y');
    expect(g.outputs[0]!.producer!.inputs[0]).toBe(x);
  });

  it('rules are tried in table order, rules of any op included', () => {
    const b = new ModelBuilder('order');
    const x = b.input('x', 'float32', [3]);
    b.output(b.op('Neg', [b.op('Relu', [x])]), 'y');
    const tried: string[] = [];
    const rule = (name: string, pattern: Pat): Rule => ({ name, pattern, rewrite: () => { tried.push(name); return null; } });
    const table = [rule('relu', op('Relu')), rule('any node', any('v', { kind: 'node' })), rule('neg', op('Neg')), rule('neg or relu', op(['Neg', 'Relu']))];
    expect(applyRules(b.finish(), table).size).toBe(0);
    expect(tried).toEqual(['relu', 'any node', 'neg or relu', 'any node', 'neg', 'neg or relu']);
  });

  it('a rule without an op is tried on every node; a rewrite returning true changes the graph in place', () => {
    const b = new ModelBuilder('inplace');
    const x = b.input('x', 'float32', [3]);
    b.output(b.op('Neg', [b.op('Relu', [x])]), 'y');
    const g = b.finish();
    const seen: string[] = [];
    const mark: Rule = {
      name: 'mark',
      pattern: any('v', { test: (v) => v.kind === 'node' && !v.producer!.meta['marked'] }),
      rewrite: (m) => { seen.push(m.root.op); m.root.meta['marked'] = true; return true; },
    };
    const counts = applyRules(g, [mark]);
    expect(counts.get('mark')).toBe(2);
    expect(seen).toEqual(['Relu', 'Neg']);
    expect(ops(g)).toEqual(['Relu', 'Neg']);
  });

  it('a table that does not settle throws, naming the rules and how often they applied', () => {
    const b = new ModelBuilder('loop');
    const x = b.input('x', 'float32', [3]);
    b.output(b.op('Neg', [x]), 'y');
    const g = b.finish();
    // Neg(x) → a fresh Neg(x), forever.
    const again: Rule = {
      name: 'neg again',
      pattern: op('Neg', [any('x')]),
      rewrite: (m, _g, at) => at.value('Neg', [bound(m, 'x')], {}, { dtype: 'float32', shape: [3] }),
    };
    expect(() => applyRules(cloneGraph(g), [again], 3)).toThrow('rewrite rules did not settle after 3 passes (neg again ×3)');
    expect(() => applyRules(cloneGraph(g), [again, DOUBLE_NEG])).toThrow(/did not settle after 32 passes \(neg again ×32\)/);
  });

  it('the replaced value keeps the old name, inside the graph and as a graph output', () => {
    const b = new ModelBuilder('names');
    const x = b.input('x', 'float32', [2, 3]);
    const r = b.op('Relu', [x]);
    const inner = b.op('Mul', [b.op('Neg', [b.op('Neg', [r])]), b.scalar(3)]);
    b.output(inner, 'y');
    const neg2 = nodeOf(inner).inputs[0]!;
    const innerName = neg2.name;
    b.output(b.op('Neg', [b.op('Neg', [b.op('Sigmoid', [x])])]), 'z');
    const g = b.finish();
    const before = cloneGraph(g);
    const rule: Rule = {
      name: 'double neg as a copy',
      pattern: op('Neg', [op('Neg', [any('x')])]),
      // A new value (not the matched x), so that the renaming shows.
      rewrite: (m, _g, at) => at.value('Identity', [bound(m, 'x')], {}, { dtype: 'float32', shape: [2, 3] }),
    };
    expect(applyRules(g, [rule]).get('double neg as a copy')).toBe(2);
    expect(ops(g)).toEqual(['Relu', 'Identity', 'Mul', 'Sigmoid', 'Identity']);
    const mul = g.nodes.find((n) => n.op === 'Mul')!;
    expect(mul.inputs[0]!.name).toBe(innerName);
    expect(mul.inputs[0]!.producer!.op).toBe('Identity');
    expect(g.outputs.map((o) => o.name)).toEqual(['y', 'z']);
    expect(g.outputs[1]!.producer!.op).toBe('Identity');
    sameNumbers(before, g);
  });

  it('a rewrite returning an existing node value renames it to the replaced name', () => {
    const b = new ModelBuilder('existing');
    const x = b.input('x', 'float32', [3]);
    b.output(b.op('Neg', [b.op('Neg', [b.op('Relu', [x])])]), 'y');
    const g = b.finish();
    applyRules(g, [DOUBLE_NEG]);
    expect(ops(g)).toEqual(['Relu']);
    expect(g.outputs[0]!.name).toBe('y');
    expect(g.outputs[0]!.producer!.op).toBe('Relu');
    validateGraph(g);
  });

  it('graph output names survive a rewrite to a value that is already an output, or an input', () => {
    const b = new ModelBuilder('outputs');
    const x = b.input('x', 'float32', [3]);
    const r = b.op('Relu', [x]);
    b.output(r, 'r');
    b.output(b.op('Neg', [b.op('Neg', [r])]), 'y'); // becomes r, which is the output 'r'
    b.output(b.op('Sigmoid', [b.op('Neg', [b.op('Neg', [r])])]), 'z'); // r read inside: r keeps its name
    b.output(b.op('Neg', [b.op('Neg', [x])]), 'w'); // becomes the input x
    const g = b.finish();
    const before = cloneGraph(g);
    expect(applyRules(g, [DOUBLE_NEG]).get('double neg')).toBe(3);
    expect(g.outputs.map((o) => o.name)).toEqual(['r', 'y', 'z', 'w']);
    expect(g.values.get('r')).toBe(r);
    expect(g.outputs[0]).toBe(r);
    expect(g.outputs[1]!.producer!.op).toBe('Identity');
    expect(g.outputs[1]!.producer!.inputs[0]).toBe(r);
    expect(g.outputs[2]!.producer!.inputs[0]).toBe(r);
    expect(g.outputs[3]!.producer!.inputs[0]).toBe(x);
    sameNumbers(before, g);
    // A rule removing Identity leaves the one that keeps an output's name, and settles.
    const noIdentity: Rule = { name: 'no identity', pattern: op('Identity', [any('x')]), rewrite: (m) => bound(m, 'x') };
    expect(applyRules(g, [noIdentity]).size).toBe(0);
    expect(g.outputs.map((o) => o.name)).toEqual(['r', 'y', 'z', 'w']);
  });

  it('emitted nodes go just before the root in emission order: the graph stays topological and computes the same', () => {
    const b = new ModelBuilder('order');
    const x = b.input('x', 'float32', [2, 4]);
    const a = b.op('Relu', [x]);
    const s = b.op('Sigmoid', [x]);
    // x·2·3 written as one Mul by 6 after unrelated nodes; the rewrite emits two nodes before the root.
    const y = b.op('Add', [b.op('Mul', [a, b.scalar(6)]), s]);
    b.output(b.op('Tanh', [y]), 'y');
    const g = b.finish();
    const before = cloneGraph(g);
    const split: Rule = {
      name: 'split the scale',
      pattern: op('Mul', [any('x'), scalar('c')], { test: (_v, m) => bound(m, 'c').data!.data[0] === 6 }),
      rewrite: (m, gg, at) => {
        const x = bound(m, 'x'), t = { dtype: x.dtype, shape: x.shape };
        const two = gg.addConst(gg.uniqueName('two'), tensor('float32', [], [2]));
        const three = gg.addConst(gg.uniqueName('three'), tensor('float32', [], [3]));
        const first = at.value('Mul', [x, two], {}, { ...t, name: 'by_two' });
        return at.value('Mul', [first, three], {}, t);
      },
    };
    const mul = g.nodes.find((n) => n.op === 'Mul')!, mulName = mul.outputs[0]!.name, scope = mul.scope;
    expect(applyRules(g, [split]).get('split the scale')).toBe(1);
    expect(ops(g)).toEqual(['Relu', 'Sigmoid', 'Mul', 'Mul', 'Add', 'Tanh']);
    const [m1, m2] = g.nodes.filter((n) => n.op === 'Mul') as [Node, Node];
    expect(m1.outputs[0]!.name).toBe('by_two');
    expect(m2.inputs[0]).toBe(m1.outputs[0]);
    expect(m2.outputs[0]!.name).toBe(mulName);
    // The emitted nodes take the root's scope.
    expect([m1.scope, m2.scope]).toEqual([scope, scope]);
    sameNumbers(before, g);
  });
});

describe('emitterBefore, dropUnread, freezeParam', () => {
  it('emitterBefore puts each node before the root, after those emitted earlier; names are unique', () => {
    const b = new ModelBuilder('emit');
    const x = b.input('x', 'float32', [3]);
    const r = b.scope('blk', () => b.op('Relu', [x]));
    b.output(b.op('Neg', [r]), 'y');
    const g = b.finish();
    const root = nodeOf(r);
    root.meta['partition'] = 2;
    const at = emitterBefore(g, root);
    const t = { dtype: 'float32' as const, shape: [3] };
    const a1 = at.value('Sigmoid', [x], {}, t);
    const a2 = at.value('Sigmoid', [a1], {}, t);
    expect(ops(g)).toEqual(['Sigmoid', 'Sigmoid', 'Relu', 'Neg']);
    expect(a1.name).toBe(`${r.name}__sigmoid`);
    expect(a2.name).not.toBe(a1.name);
    expect(a1.producer!.scope).toBe('/blk/');
    expect(a1.producer!.name.startsWith('/blk/Sigmoid')).toBe(true);
    expect(a1.producer!.meta).toEqual({ partition: 2 });
    // The meta is a copy.
    a1.producer!.meta['partition'] = 5;
    expect(root.meta['partition']).toBe(2);
    root.setInput(0, a2);
    validateGraph(g);
  });

  it('dropUnread removes an unread node and what only it read, up the graph; read nodes, outputs, params, inputs stay', () => {
    const b = new ModelBuilder('drop');
    const x = b.input('x', 'float32', [3]);
    const w = b.param('w', [3], 'ones');
    const c = b.constant(tensor('float32', [3], [1, 2, 3]), 'c');
    const shared = b.op('Relu', [x]);
    const chain = b.op('Neg', [b.op('Add', [b.op('Mul', [shared, c]), w])]);
    b.output(b.op('Sigmoid', [shared]), 'y');
    const g = b.finish();
    const neg = nodeOf(chain);
    // Read nodes and graph outputs stay.
    dropUnread(g, nodeOf(g.outputs[0]!));
    dropUnread(g, nodeOf(shared));
    expect(ops(g)).toEqual(['Relu', 'Mul', 'Add', 'Neg', 'Sigmoid']);
    dropUnread(g, neg);
    expect(ops(g)).toEqual(['Relu', 'Sigmoid']);
    expect(g.values.has(c.name)).toBe(false); // a constant only the chain read
    expect(g.values.get('w')).toBe(w); // a parameter stays
    expect(g.values.get('x')).toBe(x);
    expect(g.values.has(chain.name)).toBe(false);
    validateGraph(g);
    // A node no longer in the graph: nothing happens.
    dropUnread(g, neg);
    expect(ops(g)).toEqual(['Relu', 'Sigmoid']);
  });

  it('freezeParam makes a parameter a constant of the same name and data, read where it was', () => {
    const b = new ModelBuilder('freeze');
    const x = b.input('x', 'float32', [2, 3]);
    const w = b.param('w', [3], { normal: 1 });
    const v = b.param('v', [3], 'ones');
    b.output(b.op('Add', [b.op('Mul', [x, w]), b.op('Mul', [x, w])]), 'y');
    b.output(b.op('Mul', [x, v]), 'z');
    const g = b.finish();
    const before = cloneGraph(g);
    const data = w.data!;
    const c = freezeParam(g, w);
    expect(c.kind).toBe('const');
    expect(c.name).toBe('w');
    expect(c.data).toBe(data);
    expect(c.dtype).toBe('float32');
    expect(c.shape).toEqual([3]);
    expect(g.values.get('w')).toBe(c);
    expect(c.users.length).toBe(2);
    expect(w.users.length).toBe(0);
    expect(g.params().map((p) => p.name)).toEqual(['v']);
    expect(g.constants().map((p) => p.name)).toEqual(['w']);
    sameNumbers(before, g);
    // Not a parameter, or one without data: returned as is.
    expect(freezeParam(g, c)).toBe(c);
    expect(freezeParam(g, x)).toBe(x);
    const lazy = g.addLazyParam('lazy', 'float32', [3], { kind: 'zeros' });
    expect(freezeParam(g, lazy)).toBe(lazy);
    expect(lazy.kind).toBe('param');
  });
});
