import { CleaveError } from '../errors.js';
import type { DType } from './dtype.js';
import { type Shape, formatShape } from './shape.js';
import type { Tensor } from './tensor.js';

export type AttrValue = number | string | readonly number[] | readonly string[] | Tensor;
export type Attrs = Record<string, AttrValue>;

/**
 * How a value comes into being: fed by the user, a trainable parameter, state the model carries but
 * does not train (BatchNorm's running statistics), a constant, or a node.
 */
export type ValueKind = 'input' | 'param' | 'state' | 'const' | 'node';

/** How a parameter is filled when it has no data yet (large benchmark models are built without weights). */
export type LazyInit = { kind: 'zeros' } | { kind: 'ones' } | { kind: 'normal'; std: number; seed: number } | { kind: 'uniform'; bound: number; seed: number };

/**
 * Where an imported parameter's or state's bytes lie in the files it came from: a byte range of the
 * model file (`file` '') or of one of its external data files (`file` the location, relative to the
 * model's folder), with the SHA-256 of those bytes; or, where an initializer holds its values in
 * typed fields rather than raw bytes, just its name. The plan carries this so a rank reads only its
 * own parameters' bytes, without importing the model.
 */
export type WeightOrigin =
  | { readonly kind: 'bytes'; readonly file: string; readonly offset: number; readonly length: number; readonly sha256: string }
  | { readonly kind: 'initializer'; readonly name: string };

export interface ValueType {
  readonly dtype: DType;
  readonly shape: Shape;
}

/**
 * Which part of a training step a node belongs to, one spelling everywhere: the model's forward,
 * the loss, and the backward (until the B/W split tags each node as input gradient B or weight
 * gradient W; `backwardB`/`backwardW` are also the names of a stage's programs).
 */
export type Phase = 'forward' | 'loss' | 'backward' | 'backwardB' | 'backwardW';

/** Per-node annotations the compiler reads (partition from ONNX metadata, later passes' notes). */
export interface NodeMeta {
  partition?: number;
  phase?: Phase;
  [key: string]: unknown;
}

export class Value implements ValueType {
  readonly users: Node[] = [];
  producer: Node | null = null;
  constructor(
    public name: string,
    public dtype: DType,
    public shape: Shape,
    public readonly kind: ValueKind,
    /** Data of params and constants. */
    public data?: Tensor,
    /** For a parameter without data: how to make it. */
    public init?: LazyInit,
  ) {}

  /** For a parameter or state imported from a file: where its bytes lie there. */
  origin?: WeightOrigin;

  get type(): string {
    return `${this.dtype}${formatShape(this.shape)}`;
  }
}

export class Node {
  readonly inputs: (Value | null)[] = [];
  readonly outputs: Value[] = [];
  constructor(
    public name: string,
    public readonly op: string,
    public attrs: Attrs,
    /** ONNX scope, the name prefix such as `/h.3/attn/`: what the partitioner and printer speak in. */
    public scope: string,
    public meta: NodeMeta = {},
  ) {}

  /** Rewires input `i`, keeping the use lists of both values right. */
  setInput(i: number, v: Value | null): void {
    const old = this.inputs[i];
    if (old) {
      const k = old.users.indexOf(this);
      if (k >= 0) old.users.splice(k, 1);
    }
    this.inputs[i] = v;
    if (v) v.users.push(this);
  }
}

export interface NodeSpec {
  op: string;
  inputs: readonly (Value | null)[];
  outputs: readonly { name: string; dtype: DType; shape: Shape }[];
  attrs?: Attrs;
  name?: string;
  scope?: string;
  meta?: NodeMeta;
}

/** Scope of an ONNX node name: everything up to the last '/', as PyTorch's exporter writes them. */
export function scopeOf(name: string): string {
  const k = name.lastIndexOf('/');
  return k > 0 ? name.slice(0, k + 1) : '';
}

/**
 * A model as a topologically ordered list of nodes over SSA values. Values know their producer and
 * users; the graph keeps those lists true on every edit.
 */
export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly nodes: Node[] = [];
  readonly values = new Map<string, Value>();
  private readonly nodeNames = new Set<string>();
  private counter = 0;

  constructor(public name = 'graph', public opset = 17) {}

  private define(v: Value): Value {
    if (this.values.has(v.name)) throw new CleaveError(`value '${v.name}' is defined twice`);
    this.values.set(v.name, v);
    return v;
  }

  addInput(name: string, dtype: DType, shape: Shape): Value {
    const v = this.define(new Value(name, dtype, shape, 'input'));
    this.inputs.push(v);
    return v;
  }

  addParam(name: string, data: Tensor): Value {
    return this.define(new Value(name, data.dtype, data.shape, 'param', data));
  }

  /** A parameter known by shape alone: costs and memory can be planned without allocating it. */
  addLazyParam(name: string, dtype: DType, shape: readonly number[], init: LazyInit): Value {
    return this.define(new Value(name, dtype, [...shape], 'param', undefined, init));
  }

  addState(name: string, data: Tensor): Value {
    return this.define(new Value(name, data.dtype, data.shape, 'state', data));
  }

  addConst(name: string, data: Tensor): Value {
    return this.define(new Value(name, data.dtype, data.shape, 'const', data));
  }

  addOutput(v: Value): void {
    this.outputs.push(v);
  }

  uniqueName(base: string): string {
    let name = base;
    while (this.values.has(name) || this.nodeNames.has(name)) name = `${base}_${++this.counter}`;
    return name;
  }

  addNode(spec: NodeSpec): Node {
    const name = spec.name && !this.nodeNames.has(spec.name) ? spec.name : this.uniqueName(spec.name ?? spec.op);
    const node = new Node(name, spec.op, { ...(spec.attrs ?? {}) }, spec.scope ?? scopeOf(name), { ...(spec.meta ?? {}) });
    this.nodeNames.add(name);
    spec.inputs.forEach((v, i) => node.setInput(i, v));
    for (const o of spec.outputs) {
      const v = this.define(new Value(o.name, o.dtype, o.shape, 'node'));
      v.producer = node;
      node.outputs.push(v);
    }
    this.nodes.push(node);
    return node;
  }

  /**
   * Puts a new node where `old` stands (same name, same position), points the uses of old's outputs
   * at the new node's outputs of the same index, and drops `old`. The new node may have more outputs.
   */
  replaceNode(old: Node, spec: Omit<NodeSpec, 'name'>): Node {
    const pos = this.nodes.indexOf(old);
    if (pos < 0) throw new CleaveError(`node '${old.name}' is not in graph '${this.name}'`);
    // Outputs may reuse the old node's value names: they take temporary names until it is gone.
    const wanted = spec.outputs.map((o) => o.name);
    const outputs = spec.outputs.map((o) => ({ ...o, name: this.uniqueName(`${o.name}__new`) }));
    const node = this.addNode({ ...spec, outputs, name: this.uniqueName(`${old.name}__new`), scope: spec.scope ?? old.scope });
    this.nodes.pop();
    old.outputs.forEach((o, i) => { if (node.outputs[i]) this.replaceAllUses(o, node.outputs[i]!); });
    this.removeNode(old);
    this.nodes.splice(pos, 0, node);
    this.nodeNames.delete(node.name);
    node.name = old.name;
    this.nodeNames.add(node.name);
    node.outputs.forEach((v, i) => this.renameValue(v, wanted[i]!));
    return node;
  }

  /** Gives `node` a name no other node has (the name of one just removed, say). */
  renameNode(node: Node, name: string): void {
    if (node.name === name) return;
    if (this.nodeNames.has(name)) throw new CleaveError(`node name '${name}' is taken`);
    this.nodeNames.delete(node.name);
    node.name = name;
    this.nodeNames.add(name);
  }

  renameValue(v: Value, name: string): void {
    if (v.name === name) return;
    if (this.values.has(name)) throw new CleaveError(`value name '${name}' is taken`);
    this.values.delete(v.name);
    v.name = name;
    this.values.set(name, v);
  }

  params(): Value[] {
    return [...this.values.values()].filter((v) => v.kind === 'param');
  }

  states(): Value[] {
    return [...this.values.values()].filter((v) => v.kind === 'state');
  }

  constants(): Value[] {
    return [...this.values.values()].filter((v) => v.kind === 'const');
  }

  /** Points every use of `from` (graph outputs included) at `to`. */
  replaceAllUses(from: Value, to: Value): void {
    for (const n of [...from.users]) {
      n.inputs.forEach((v, i) => {
        if (v === from) n.setInput(i, to);
      });
    }
    this.outputs.forEach((v, i) => {
      if (v === from) this.outputs[i] = to;
    });
  }

  /** Removes a node whose outputs nobody uses; refuses otherwise, naming a user. */
  removeNode(node: Node): void {
    for (const o of node.outputs) {
      if (o.users.length || this.outputs.includes(o)) {
        const by = o.users[0]?.name ?? 'the graph outputs';
        throw new CleaveError(`cannot remove node '${node.name}': its output '${o.name}' is used by ${by}`);
      }
    }
    node.inputs.forEach((_, i) => node.setInput(i, null));
    const k = this.nodes.indexOf(node);
    if (k >= 0) this.nodes.splice(k, 1);
    this.nodeNames.delete(node.name);
    for (const o of node.outputs) this.values.delete(o.name);
  }

  /** Drops nodes and tensors that no graph output depends on. Returns how many nodes went. */
  removeDeadCode(): number {
    let removed = 0;
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i]!;
      if (n.outputs.every((o) => !o.users.length && !this.outputs.includes(o))) {
        this.removeNode(n);
        removed++;
      }
    }
    for (const v of [...this.values.values()]) {
      if ((v.data || v.init) && !v.users.length && !this.outputs.includes(v)) this.values.delete(v.name);
    }
    return removed;
  }
}
