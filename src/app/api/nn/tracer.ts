import { CleaveError } from '../../../core/errors.js';
import { ALL_DTYPES, type DType } from '../../../core/ir/dtype.js';
import type { AttrValue, Value } from '../../../core/ir/graph.js';
import { type Shape, formatShape } from '../../../core/ir/shape.js';
import type { Tensor } from '../../../core/ir/tensor.js';
import { ModelBuilder } from '../../../core/ir/builder.js';
import { type Module, type ModuleTree, moduleTree } from './module.js';
import { currentPartition, within } from './partition.js';
import { type Parameter, type State, SymTensor } from './tensor.js';

export interface TracerOptions {
  name: string;
  seed?: number;
  opset?: number;
  /** Parameters without data get an initializer spec instead (for planning models too big to hold). */
  lazy?: boolean;
}

/**
 * Records a model's forward as IR through a ModelBuilder: each op is shape-inferred as it is added,
 * named under the module that runs it (`/h.0/attn/MatMul`) and annotated with the innermost open
 * partition. Parameters and state become graph values on first use, named by their module path.
 */
export class Tracer {
  readonly builder: ModelBuilder;
  readonly tree: ModuleTree;
  private readonly made = new Map<Parameter | State, Value>();
  private readonly memo = new Map<string, SymTensor>();

  constructor(root: Module, opts: TracerOptions) {
    this.tree = moduleTree(root);
    this.builder = new ModelBuilder(opts.name, { opset: opts.opset ?? 17, seed: opts.seed ?? 0, lazy: opts.lazy });
  }

  input(name: string, dtype: DType, shape: Shape): SymTensor {
    if (!ALL_DTYPES.includes(dtype)) throw new CleaveError(`input '${name}': unknown dtype '${dtype}' (known: ${ALL_DTYPES.join(', ')})`);
    if (!Array.isArray(shape) || !shape.every((d) => (typeof d === 'number' && Number.isInteger(d) && d > 0) || (typeof d === 'string' && d.length > 0))) {
      throw new CleaveError(`input '${name}': shape ${Array.isArray(shape) ? formatShape(shape) : JSON.stringify(shape)} must list positive sizes or symbol names such as 'N'`);
    }
    return new SymTensor(this.builder.input(name, dtype, [...shape]), this);
  }

  op(type: string, inputs: readonly (SymTensor | null)[], attrs: Record<string, AttrValue>, outputs: number): SymTensor[] {
    const outs = this.builder.ops(type, inputs.map((x) => x?.value ?? null), attrs, outputs);
    const stage = currentPartition();
    if (stage !== undefined) outs[0]!.producer!.meta.partition = stage;
    return outs.map((v) => new SymTensor(v, this));
  }

  scalar(x: number, dtype: DType): SymTensor {
    return new SymTensor(this.builder.scalar(x, dtype), this);
  }

  constant(data: Tensor, name: string): SymTensor {
    return new SymTensor(this.builder.constant(data, name), this);
  }

  /** One value per key for the whole trace (a causal mask shared by every attention layer). */
  memoize(key: string, make: () => SymTensor): SymTensor {
    let v = this.memo.get(key);
    if (!v) this.memo.set(key, (v = make()));
    return v;
  }

  parameter(p: Parameter): SymTensor {
    let v = this.made.get(p);
    if (!v) {
      const name = this.tree.parameters.get(p);
      if (name === undefined) throw new CleaveError(`a Parameter of shape ${formatShape(p.dims)} is used in forward but is no module's property: assign it to one (this.weight = new Parameter(…)) so it gets a name`);
      if (p.data) {
        if (p.data.shape.join() !== p.dims.join()) throw new CleaveError(`parameter '${name}': its data has shape ${formatShape(p.data.shape)}, the module declares ${formatShape(p.dims)}`);
        v = this.builder.graph.addParam(name, p.data);
      } else {
        v = this.builder.param(name, p.dims, p.init);
      }
      this.made.set(p, v);
    }
    return new SymTensor(v, this);
  }

  state(s: State): SymTensor {
    let v = this.made.get(s);
    if (!v) {
      const name = this.tree.states.get(s);
      if (name === undefined) throw new CleaveError(`a State of shape ${formatShape(s.shape)} is used in forward but is no module's property: assign it to one so it gets a name`);
      v = this.builder.state(name, s.data);
      this.made.set(s, v);
    }
    return new SymTensor(v, this);
  }

  /** Runs a module's forward under its scope and the partition it was created in. */
  enter<T>(m: Module, fn: () => T): T {
    const segments = this.tree.modules.get(m);
    if (!segments) {
      // A module made on the fly (an activation) is fine as long as nothing of it needs a name.
      if (m.namedParameters().length || m.namedStates().length) {
        throw new CleaveError(`a ${m.constructor.name} with parameters runs in forward but is not part of the model: assign it to a module's property (this.fc = new ${m.constructor.name}(…)) so its parameters get names`);
      }
      return within(m.partition, fn);
    }
    const prefix = segments.length ? `/${segments.join('/')}/` : '/';
    return within(m.partition, () => this.builder.within(prefix, {}, fn));
  }
}

let active: Tracer | undefined;

/** The running trace; `what` names the caller in the error when there is none. */
export function activeTracer(what: string): Tracer {
  if (!active) throw new CleaveError(`${what}: forward code runs on symbolic tensors while a model is traced (nn.trace(), DistributedModel.step(), cleave compile), not on its own`);
  return active;
}

/** Runs `fn` with `t` as the running trace. Traces do not nest. */
export function runTrace<T>(t: Tracer, fn: () => T): T {
  if (active) throw new CleaveError('a model is already being traced: traces do not nest');
  active = t;
  try {
    return fn();
  } finally {
    active = undefined;
  }
}

/** Module.forward's wrapper calls this, so `child.forward(x)` records under the child as PyTorch's `child(x)` does. */
export function enterModule<T>(m: Module, fn: () => T): T {
  return activeTracer(`${m.constructor.name}.forward`).enter(m, fn);
}
