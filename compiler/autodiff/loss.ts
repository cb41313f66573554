import type { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import { isFloat } from '../../src/core/ir/dtype.js';
import type { Attrs, Graph, Value } from '../../src/core/ir/graph.js';
import { formatShape, numel } from '../../src/core/ir/shape.js';

/**
 * What to minimize: a scalar output of the model itself, softmax cross-entropy of a logits output
 * against integer labels (SoftmaxCrossEntropyLoss semantics, mean over non-ignored labels), or the
 * mean squared error of an output against float targets. Labels become a new graph input.
 */
export type LossSpec =
  | { kind: 'output'; output?: string }
  | { kind: 'cross-entropy'; output?: string; labels?: string; ignoreIndex?: number }
  | { kind: 'mse'; output?: string; labels?: string };

export const LOSS_KINDS = ['output', 'cross-entropy', 'mse'] as const;

function pickOutput(g: Graph, name: string | undefined, what: string): Value {
  if (name) {
    const v = g.outputs.find((o) => o.name === name);
    if (!v) throw new CleaveError(`${what}: the model has no output '${name}' (outputs: ${g.outputs.map((o) => o.name).join(', ')})`);
    return v;
  }
  const v = g.outputs.find((o) => isFloat(o.dtype));
  if (!v) throw new CleaveError(`${what}: the model has no floating-point output`);
  return v;
}

/** Adds the loss to the graph; returns the scalar loss and the labels input (if any). */
export function addLoss(b: ModelBuilder, spec: LossSpec): { loss: Value; labels?: Value } {
  const g = b.graph;
  switch (spec.kind) {
    case 'output': {
      const v = pickOutput(g, spec.output, 'loss');
      if (!isFloat(v.dtype) || numel(v.shape, 2) !== 1) {
        throw new CleaveError(`loss: output '${v.name}' has type ${v.type}; a loss output must be a floating-point scalar (or use --loss cross-entropy / mse)`);
      }
      return { loss: v.shape.length ? b.op('Reshape', [v], { shape: [] }) : v };
    }
    case 'cross-entropy': {
      const logits = pickOutput(g, spec.output, 'cross-entropy loss');
      if (logits.shape.length < 2) throw new CleaveError(`cross-entropy loss: logits '${logits.name}' ${formatShape(logits.shape)} need a class dimension last`);
      const classes = logits.shape[logits.shape.length - 1]!;
      const labels = g.addInput(spec.labels ?? 'labels', 'int64', logits.shape.slice(0, -1));
      const flat = b.op('Reshape', [logits], { shape: [-1, classes as number] });
      const flatLabels = b.op('Reshape', [labels], { shape: [-1] });
      const attrs: Attrs = { reduction: 'mean' };
      if (spec.ignoreIndex !== undefined) attrs['ignore_index'] = spec.ignoreIndex;
      return { loss: b.op('SoftmaxCrossEntropyLoss', [flat, flatLabels], attrs), labels };
    }
    case 'mse': {
      const y = pickOutput(g, spec.output, 'mse loss');
      const labels = g.addInput(spec.labels ?? 'targets', y.dtype, y.shape);
      const d = b.op('Sub', [y, labels]);
      return { loss: b.op('ReduceMean', [b.op('Mul', [d, d])], { keepdims: 0 }), labels };
    }
  }
}

/** What a user may say about the loss `--loss auto` picks: which output, the labels' name, an ignored label. */
export interface LossHints { output?: string; labels?: string; ignoreIndex?: number }

/**
 * The loss `--loss auto` picks: the model's scalar output if it has one; cross-entropy for token
 * models (one integer input) and classifiers (a [batch, classes] output); mean squared error otherwise.
 * With `hints.output`, the same choice for that output. Hints the chosen loss has no use for are
 * refused, naming the loss it chose, rather than dropped.
 */
export function autoLoss(g: Graph, hints: LossHints = {}): LossSpec {
  const chosen = hints.output !== undefined ? pickOutput(g, hints.output, '--output') : undefined;
  const isScalar = (o: Value) => isFloat(o.dtype) && o.shape.every((d) => d === 1);
  const scalar = chosen ? (isScalar(chosen) ? chosen : undefined) : g.outputs.find(isScalar);
  const why = (kind: string) => `--loss auto chose ${kind}${hints.output === undefined ? '' : ` for output '${hints.output}'`}`;
  if (scalar) {
    if (hints.labels !== undefined) throw new CleaveError(`--labels: ${why(`the model's own scalar output '${scalar.name}'`)}, which takes no labels`);
    if (hints.ignoreIndex !== undefined) throw new CleaveError(`--ignore-index: ${why(`the model's own scalar output '${scalar.name}'`)}, which has no labels to ignore`);
    return { kind: 'output', output: scalar.name };
  }
  const logits = chosen ?? g.outputs.find((o) => isFloat(o.dtype));
  const tokens = g.inputs.length === 1 && !isFloat(g.inputs[0]!.dtype);
  if (tokens || logits?.shape.length === 2) return { kind: 'cross-entropy', output: logits?.name, labels: hints.labels, ignoreIndex: hints.ignoreIndex };
  if (hints.ignoreIndex !== undefined) throw new CleaveError(`--ignore-index: ${why('mean squared error')}, whose float targets have no ignored label; give --loss cross-entropy for integer labels`);
  return { kind: 'mse', output: logits?.name, labels: hints.labels };
}
