import { basename } from 'node:path';
import { CleaveError } from '../../src/core/errors.js';
import { type DType, dtypeToOnnx } from '../../src/core/ir/dtype.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { materialize } from '../../src/core/ir/materialize.js';
import { type LiftedInput, getOp } from '../../src/core/ops/index.js';
import { attrEquals, encodeAttr } from './attributes.js';
import { encodeModel } from '../../src/core/onnx/codec.js';
import { writeFileAtomic } from '../../src/core/util/fs.js';
import { MAX_OPSET, MIN_OPSET } from './import.js';
import type { AttributeP, ModelP, NodeP, TensorP, ValueInfoP } from '../../src/core/onnx/proto.js';
import { tensorToProto } from '../../src/core/onnx/tensors.js';

export interface ExportOptions {
  /** Default-domain opset to write; at least what the graph's ops need. */
  opset?: number;
  /** Write tensors of at least this many bytes to an external data file beside the model. */
  externalDataFile?: string;
  externalThreshold?: number;
}

// Oldest IR version that each opset may be paired with (onnx/helper.py's table).
const IR_FOR_OPSET: Record<number, number> = { 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11 };

function valueInfo(v: Value): ValueInfoP {
  return {
    name: v.name,
    type: { tensorType: { elemType: dtypeToOnnx(v.dtype), shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function liftedTensor(l: LiftedInput, v: unknown, like?: DType): Tensor {
  if (like !== undefined && (l.type === 'float' || l.type === 'int')) return tensor(like, [], [v as number]);
  switch (l.type) {
    case 'ints': return tensor('int64', [(v as number[]).length], v as number[]);
    case 'int': return tensor('int64', [], [v as number]);
    case 'float': return tensor('float32', [], [v as number]);
    case 'bool': return tensor('bool', [], [v ? 1 : 0]);
  }
}

/** Writes the IR as an ONNX model that onnxruntime (and cleave) load back to the same function. */
export function exportModel(g: Graph, opts: ExportOptions = {}): { model: ModelP; external?: Uint8Array } {
  const needed = Math.max(MIN_OPSET, g.opset, ...g.nodes.map((n) => getOp(n.op, `node '${n.name}'`).since));
  const opset = opts.opset ?? needed;
  if (opset < needed || opset > MAX_OPSET) throw new CleaveError(`cannot export at opset ${opset}: the graph needs ${needed}–${MAX_OPSET}`);
  const initializers: TensorP[] = [];
  const used = new Set(g.values.keys());
  const fresh = (base: string): string => {
    let name = base, k = 0;
    while (used.has(name)) name = `${base}_${++k}`;
    used.add(name);
    return name;
  };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const addInitializer = (name: string, t: Tensor): void => {
    const p = tensorToProto(name, t);
    const bytes = p.rawData!;
    if (opts.externalDataFile && bytes.byteLength >= (opts.externalThreshold ?? 1024)) {
      // 64-byte alignment lets readers map the file and use tensors in place.
      const pad = (64 - (offset % 64)) % 64;
      if (pad) chunks.push(new Uint8Array(pad));
      offset += pad;
      chunks.push(bytes);
      initializers.push({
        name, dims: p.dims, dataType: p.dataType, dataLocation: 1,
        externalData: [
          { key: 'location', value: basename(opts.externalDataFile) },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(bytes.byteLength) },
        ],
      });
      offset += bytes.byteLength;
    } else initializers.push(p);
  };
  // Parameters and state become initializers; constants become Constant nodes, which keeps them
  // apart from trainable tensors when the model is read back (ONNX itself has no such notion).
  const constNodes: NodeP[] = [];
  for (const v of g.values.values()) {
    if (v.kind === 'param' && !v.data) materialize(v);
    if (v.kind === 'const' && v.data) {
      constNodes.push({ name: fresh(`${v.name}/Constant`), opType: 'Constant', domain: '', input: [], output: [v.name], attribute: [encodeAttr('value', v.data, 'tensor')] });
    } else if (v.data) addInitializer(v.name, v.data);
  }

  const nodes: NodeP[] = g.nodes.map((n) => {
    const def = getOp(n.op, `node '${n.name}'`);
    if (def.domain) throw new CleaveError(`node '${n.name}': ${n.op} is an op of cleave's own training graphs and has no ONNX form`);
    const inputs = n.inputs.map((v) => v?.name ?? '');
    const attribute: AttributeP[] = [];
    for (const [k, v] of Object.entries(n.attrs)) {
      const spec = def.attrs[k];
      if (!spec) continue;
      // Defaults stay implicit: attributes newer than the target opset (Cast's saturate) must not appear.
      if (spec.default !== undefined && attrEquals(spec.default, v)) continue;
      attribute.push(encodeAttr(k, v, spec.type));
    }
    for (const l of def.lifted ?? []) {
      const v = n.attrs[l.attr];
      if (v === undefined) continue;
      if (opset >= l.sinceInput) {
        const name = fresh(`${n.name}/${l.attr}`);
        addInitializer(name, liftedTensor(l, v, l.like !== undefined ? n.inputs[l.like]?.dtype : undefined));
        while (inputs.length < l.input) inputs.push('');
        inputs[l.input] = name;
      } else attribute.push(encodeAttr(l.attr, v, l.type === 'ints' ? 'ints' : l.type === 'float' ? 'float' : 'int'));
    }
    const node: NodeP = { name: n.name, opType: n.op, domain: '', input: inputs, output: n.outputs.map((o) => o.name), attribute };
    if (n.meta.partition !== undefined) node.metadataProps = [{ key: 'partition', value: String(n.meta.partition) }];
    return node;
  });

  const hasNodeMetadata = nodes.some((n) => n.metadataProps);
  const model: ModelP = {
    irVersion: Math.max(IR_FOR_OPSET[opset] ?? 10, hasNodeMetadata ? 10 : 0),
    opsetImport: [{ domain: '', version: opset }],
    producerName: 'cleave',
    producerVersion: '0.1.0',
    graph: {
      name: g.name,
      node: [...constNodes, ...nodes],
      initializer: initializers,
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  };
  if (!chunks.length) return { model };
  const external = new Uint8Array(offset);
  let o = 0;
  for (const c of chunks) { external.set(c, o); o += c.byteLength; }
  return { model, external };
}

/** Writes MODEL.onnx (and its external data file if asked); nothing is left half-written on error. */
export function writeOnnx(g: Graph, file: string, opts: ExportOptions = {}): void {
  const { model, external } = exportModel(g, opts);
  const bytes = encodeModel(model);
  if (external && opts.externalDataFile) writeFileAtomic(opts.externalDataFile, external);
  writeFileAtomic(file, bytes);
}

