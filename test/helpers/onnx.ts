// Hand-written ONNX models for tests that need what the builder will not make (bad files, functions,
// foreign domains, old opsets).
import { encodeModel } from '../../src/core/onnx/codec.js';
import type { AttributeP, FunctionP, ModelP, NodeP, TensorP, ValueInfoP } from '../../src/core/onnx/proto.js';
import { ATTR } from '../../src/core/onnx/schema.js';
import { tensorToProto } from '../../src/core/onnx/tensors.js';
import { tensor } from '../../src/core/ir/tensor.js';

export const vi = (name: string, elemType: number, dims: (number | string)[]): ValueInfoP => ({
  name,
  type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
});

export const node = (opType: string, input: string[], output: string[], name: string, attribute: AttributeP[] = [], domain = ''): NodeP => ({
  opType, input, output, name, attribute, domain,
});

export const intsAttr = (name: string, ints: number[]): AttributeP => ({ name, type: ATTR.INTS, ints });
export const intAttr = (name: string, i: number): AttributeP => ({ name, type: ATTR.INT, i });
export const floatAttr = (name: string, f: number): AttributeP => ({ name, type: ATTR.FLOAT, f });

export const floatInit = (name: string, shape: number[], fill = (i: number) => i * 0.1): TensorP =>
  tensorToProto(name, tensor('float32', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => fill(i))));
export const int64Init = (name: string, values: number[]): TensorP => tensorToProto(name, tensor('int64', [values.length], values));

export function model(parts: {
  nodes: NodeP[];
  inputs: ValueInfoP[];
  outputs: ValueInfoP[];
  initializers?: TensorP[];
  opset?: number;
  irVersion?: number;
  functions?: FunctionP[];
  extraOpsets?: { domain: string; version: number }[];
}): ModelP {
  return {
    irVersion: parts.irVersion ?? 8,
    opsetImport: [{ domain: '', version: parts.opset ?? 17 }, ...(parts.extraOpsets ?? [])],
    producerName: 'cleave-test',
    graph: { name: 'test', node: parts.nodes, input: parts.inputs, output: parts.outputs, initializer: parts.initializers ?? [] },
    functions: parts.functions ?? [],
  };
}

export const bytesOf = (m: ModelP): Uint8Array => encodeModel(m);
