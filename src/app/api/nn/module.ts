import { CleaveError } from '../../../core/errors.js';
import { formatShape } from '../../../core/ir/shape.js';
import type { Tensor } from '../../../core/ir/tensor.js';
import { currentPartition } from './partition.js';
import { Parameter, State, type SymTensor } from './tensor.js';
import { enterModule } from './tracer.js';

/** Marks modules of any copy of cleave, so a model file that imports another copy is told so. */
export const MODULE_BRAND = Symbol.for('cleave.nn.Module');

/**
 * A layer or model, PyTorch style: children and parameters are its properties, named by the
 * property (`this.attn = new CausalSelfAttention(…)` makes `attn`; an array of modules `h` makes
 * `h.0`, `h.1`, …). `forward` runs on symbolic tensors while the model is traced.
 */
export abstract class Module {
  readonly [MODULE_BRAND] = true;
  /** The partition block this module was created in (innermost), if any: its forward runs there. */
  readonly partition: number | undefined;

  constructor() {
    this.partition = currentPartition();
    // Subclass methods are on the prototype already: wrapping forward here means `child.forward(x)`
    // records under the child's name and partition, as calling `child(x)` does in PyTorch.
    const own: unknown = (this as unknown as { forward?: unknown }).forward;
    if (typeof own === 'function') {
      const fn = own as (...args: unknown[]) => unknown;
      Object.defineProperty(this, 'forward', { value: (...args: unknown[]) => enterModule(this, () => fn.apply(this, args)), writable: true, configurable: true });
    }
  }

  /** Direct children by name: module properties, and arrays of modules as `name.i`. */
  namedChildren(): [string, Module][] {
    const out: [string, Module][] = [];
    for (const [k, v] of Object.entries(this)) {
      if (v instanceof Module) out.push([k, v]);
      else if (Array.isArray(v) && v.length && v.every((x) => x instanceof Module)) v.forEach((m: Module, i) => out.push([`${k}.${i}`, m]));
    }
    return out;
  }

  /** This module's own parameters and state (not its children's), by property name. */
  ownTensors(): [string, Parameter | State][] {
    return Object.entries(this).filter((e): e is [string, Parameter | State] => e[1] instanceof Parameter || e[1] instanceof State);
  }

  /** Every module under this one (itself as ''), each once under its first path. */
  namedModules(): [string, Module][] {
    return [...moduleTree(this).modules].map(([m, segs]) => [segs.join('.'), m]);
  }

  /** Every parameter, each once under its first name (a tied weight keeps the name it was first found under). */
  namedParameters(): [string, Parameter][] {
    return [...moduleTree(this).parameters].map(([p, name]) => [name, p]);
  }

  namedStates(): [string, State][] {
    return [...moduleTree(this).states].map(([s, name]) => [name, s]);
  }

  parameterCount(): number {
    return this.namedParameters().reduce((a, [, p]) => a + p.dims.reduce((x, y) => x * y, 1), 0);
  }

  /**
   * Sets parameters and state from tensors by name (an ONNX model's initializers, a checkpoint).
   * `strict` (default) also rejects names the model lacks and parameters left without data.
   */
  loadStateDict(weights: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>, opts: { strict?: boolean } = {}): void {
    const given = weights instanceof Map ? new Map(weights) : new Map(Object.entries(weights as Record<string, Tensor>));
    const strict = opts.strict ?? true;
    const missing: string[] = [];
    const named = [...this.namedParameters(), ...this.namedStates()];
    for (const [name, p] of named) {
      const t = given.get(name);
      if (!t) {
        missing.push(name);
        continue;
      }
      const want = p instanceof Parameter ? p.dims : p.data.shape;
      if (t.shape.join() !== want.join()) throw new CleaveError(`loadStateDict: '${name}' has shape ${formatShape(t.shape)}; the model's ${this.constructor.name} expects ${formatShape(want)}`);
      p.data = t;
    }
    if (!strict) return;
    const known = new Set(named.map(([n]) => n));
    const unexpected = [...given.keys()].filter((k) => !known.has(k));
    if (missing.length || unexpected.length) {
      throw new CleaveError(`loadStateDict: ${[missing.length ? `missing ${missing.join(', ')}` : '', unexpected.length ? `unexpected ${unexpected.join(', ')}` : ''].filter(Boolean).join('; ')} (strict: false loads what matches)`);
    }
  }
}

/** A module that maps one tensor to one: what Sequential chains. */
export type Layer = Module & { forward(x: SymTensor): SymTensor };

export interface ModuleTree {
  /** Module → its path segments (`['h.0', 'attn']`; the root has none). */
  modules: Map<Module, string[]>;
  parameters: Map<Parameter, string>;
  states: Map<State, string>;
}

/** Names every module, parameter and state under `root`, depth first in property order; shared ones keep their first name. */
export function moduleTree(root: Module): ModuleTree {
  const tree: ModuleTree = { modules: new Map(), parameters: new Map(), states: new Map() };
  const visit = (m: Module, segs: string[]): void => {
    if (tree.modules.has(m)) return;
    tree.modules.set(m, segs);
    for (const [k, t] of m.ownTensors()) {
      const name = [...segs, k].join('.');
      if (t instanceof Parameter) { if (!tree.parameters.has(t)) tree.parameters.set(t, name); }
      else if (!tree.states.has(t)) tree.states.set(t, name);
    }
    for (const [k, c] of m.namedChildren()) visit(c, [...segs, k]);
  };
  visit(root, []);
  return tree;
}

/** Modules applied one after another; children are named `0`, `1`, … or by the keys given. */
export class Sequential extends Module {
  private readonly layers: [string, Layer][];

  constructor(...layers: Layer[] | [Readonly<Record<string, Layer>>]) {
    super();
    const first = layers[0];
    this.layers = layers.length === 1 && first && !(first instanceof Module)
      ? Object.entries(first as Record<string, Layer>)
      : (layers as Layer[]).map((m, i) => [String(i), m]);
    for (const [k, m] of this.layers) if (!(m instanceof Module)) throw new CleaveError(`Sequential: '${k}' is not a module`);
  }

  override namedChildren(): [string, Module][] {
    return [...this.layers];
  }

  forward(x: SymTensor): SymTensor {
    return this.layers.reduce((h, [, m]) => m.forward(h), x);
  }
}
