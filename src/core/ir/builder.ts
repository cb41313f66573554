import { CleaveError } from '../errors.js';
import type { DType } from './dtype.js';
import { type Attrs, Graph, type LazyInit, type NodeMeta, type Value } from './graph.js';
import { type Shape } from './shape.js';
import { type Tensor, tensor } from './tensor.js';
import { validateGraph } from './validate.js';
import { getOp, normalizeAttrs } from '../ops/index.js';
import { Rng } from '../util/random.js';

export type Init = 'zeros' | 'ones' | { normal: number } | { uniform: number };

/**
 * Builds IR graphs in code: each op goes through the registry's shape inference as it is added, so
 * a mistake is reported at the line that makes it. Names follow PyTorch's exporter: nodes
 * `/h.0/attn/MatMul`, parameters `h.0.attn.weight`.
 */
export class ModelBuilder {
  readonly graph: Graph;
  private readonly scopes: string[] = [];
  private readonly rng: Rng;
  private rawPrefix: string | null = null;
  private readonly lazy: boolean;
  private seedCounter = 0;
  private meta: NodeMeta = {};

  /** A new graph named `graph`, or more nodes for an existing one. */
  /** `lazy`: parameters get an initializer spec instead of data (for planning models too big to hold). */
  constructor(graph: string | Graph, opts: { opset?: number; seed?: number; lazy?: boolean } = {}) {
    this.graph = typeof graph === 'string' ? new Graph(graph, opts.opset ?? 17) : graph;
    this.rng = new Rng(opts.seed ?? 0);
    this.lazy = opts.lazy ?? false;
  }

  /** Runs `fn` with node names under `prefix` (such as `/h.0/MatMul_grad/`) and `meta` on every node. */
  within<T>(prefix: string, meta: NodeMeta, fn: () => T): T {
    const [p, m] = [this.rawPrefix, this.meta];
    this.rawPrefix = prefix;
    this.meta = { ...m, ...meta };
    try {
      return fn();
    } finally {
      this.rawPrefix = p;
      this.meta = m;
    }
  }

  /** Runs `fn` with `name` appended to the scope of every node and parameter it creates. */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    return this.graph.addInput(name, dtype, shape);
  }

  param(name: string, shape: readonly number[], init: Init): Value {
    const full = [...this.scopes, name].join('.');
    if (!this.lazy) return this.graph.addParam(full, this.init(shape, init));
    const seed = (this.rng.int(2 ** 31) + this.seedCounter++) >>> 0;
    const spec: LazyInit = init === 'zeros' ? { kind: 'zeros' } : init === 'ones' ? { kind: 'ones' }
      : 'normal' in init ? { kind: 'normal', std: init.normal, seed } : { kind: 'uniform', bound: init.uniform, seed };
    return this.graph.addLazyParam(full, 'float32', shape, spec);
  }

  state(name: string, data: Tensor): Value {
    return this.graph.addState([...this.scopes, name].join('.'), data);
  }

  constant(data: Tensor, name = 'const'): Value {
    return this.graph.addConst(this.graph.uniqueName(`${this.prefix()}${name}`), data);
  }

  scalar(x: number, dtype: DType = 'float32'): Value {
    return this.constant(tensor(dtype, [], [x]), 'Constant_output_0');
  }

  private prefix(): string {
    if (this.rawPrefix !== null) return this.rawPrefix;
    return this.scopes.length ? `/${this.scopes.join('/')}/` : '/';
  }

  private init(shape: readonly number[], init: Init): Tensor {
    const t = tensor('float32', shape);
    if (init === 'ones') t.data.fill(1);
    else if (init !== 'zeros') {
      for (let i = 0; i < t.data.length; i++) {
        t.data[i] = 'normal' in init ? init.normal * this.rng.normal() : init.uniform * (2 * this.rng.next() - 1);
      }
    }
    return t;
  }

  /** Adds one node; returns its outputs. Shapes are inferred and checked now. */
  ops(op: string, inputs: readonly (Value | null)[], attrs: Attrs = {}, numOutputs = 1): Value[] {
    const def = getOp(op, `${this.prefix()}${op}`);
    const g = this.graph;
    const name = g.uniqueName(`${this.prefix()}${op}`);
    const norm = normalizeAttrs(def, attrs, `node '${name}'`);
    const consts = inputs.map((v) => (v?.kind === 'const' ? v.data : undefined));
    const types = def.infer({ node: name, inputs, numOutputs, attrs: norm, consts });
    const node = g.addNode({
      op, name, inputs, attrs: norm, meta: this.meta,
      outputs: types.map((t, i) => ({ name: g.uniqueName(`${name}_output_${i}`), dtype: t.dtype, shape: t.shape })),
    });
    return node.outputs;
  }

  op(op: string, inputs: readonly (Value | null)[], attrs: Attrs = {}): Value {
    return this.ops(op, inputs, attrs)[0]!;
  }

  output(v: Value, name?: string): Value {
    if (name && name !== v.name) {
      if (v.kind !== 'node') throw new CleaveError(`output '${name}' must be computed by a node`);
      this.graph.renameValue(v, name);
    }
    this.graph.addOutput(v);
    return v;
  }

  /** Validates and returns the graph. */
  finish(): Graph {
    validateGraph(this.graph);
    return this.graph;
  }
}
