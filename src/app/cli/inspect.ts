import { dirname } from 'node:path';
import { modelNodes, findUnsupported, importModel, type Unsupported } from '../../../compiler/onnx/import.js';
import { readModelFile } from '../../core/onnx/codec.js';
import type { ModelP } from '../../core/onnx/proto.js';
import { onnxTypeName } from '../../core/ir/dtype.js';
import type { Graph, Value } from '../../core/ir/graph.js';
import { formatShape } from '../../core/ir/shape.js';
import { parameterStats, tensorStats } from '../../core/ir/stats.js';
import { getOp } from '../../core/ops/index.js';
import { formatBytes, formatCount, formatFlops, formatPercent, table } from '../../core/util/format.js';

export interface InspectOptions {
  batch?: number;
  dims?: Record<string, number>;
}

interface TensorInfo { name: string; dtype: string; shape: (number | string)[] }
interface OpRow { op: string; count: number; flops: number; bytes: number }
interface ScopeRow { scope: string; nodes: number; params: number; flops: number }

export interface InspectReport {
  file: string;
  opset: number;
  irVersion: number;
  producer: string;
  batch: number | null;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  parameters: { count: number; bytes: number; tensors: number };
  state: { count: number; bytes: number; tensors: number };
  constants: { count: number; bytes: number; tensors: number };
  nodes: number;
  flops: number;
  ops: OpRow[];
  scopes: ScopeRow[];
  unsupported: Unsupported[];
}

const info = (v: Value): TensorInfo => ({ name: v.name, dtype: v.dtype, shape: [...v.shape] });

/** The first component of a scope (`/h.3/attn/` → `/h.3/`): one row per block of the model. */
const topScope = (scope: string): string => {
  const m = /^\/[^/]+\//.exec(scope);
  return m ? m[0] : '/';
};

function summarize(g: Graph): Pick<InspectReport, 'inputs' | 'outputs' | 'parameters' | 'state' | 'constants' | 'nodes' | 'flops' | 'ops' | 'scopes'> {
  const ops = new Map<string, OpRow>();
  const scopes = new Map<string, ScopeRow>();
  const scopeRow = (s: string): ScopeRow => {
    let r = scopes.get(s);
    if (!r) scopes.set(s, (r = { scope: s, nodes: 0, params: 0, flops: 0 }));
    return r;
  };
  let flops = 0;
  for (const n of g.nodes) {
    const def = getOp(n.op, `node '${n.name}'`);
    const c = def.cost({ node: n.name, inputs: n.inputs, numOutputs: n.outputs.length, attrs: n.attrs, consts: [] }, n.outputs);
    flops += c.flops;
    const r = ops.get(n.op) ?? { op: n.op, count: 0, flops: 0, bytes: 0 };
    r.count++;
    r.flops += c.flops;
    r.bytes += c.bytes;
    ops.set(n.op, r);
    const s = scopeRow(topScope(n.scope));
    s.nodes++;
    s.flops += c.flops;
  }
  // A parameter belongs to the scope of the first node that reads it.
  for (const p of g.params()) scopeRow(topScope(p.users[0]?.scope ?? '/')).params += tensorStats([p]).count;
  const stat = (vs: Value[]) => ({ ...tensorStats(vs), tensors: vs.length });
  return {
    inputs: g.inputs.map(info),
    outputs: g.outputs.map(info),
    parameters: { ...parameterStats(g), tensors: g.params().length },
    state: stat(g.states()),
    constants: stat(g.constants()),
    nodes: g.nodes.length,
    flops,
    ops: [...ops.values()].sort((a, b) => b.flops - a.flops || b.count - a.count || a.op.localeCompare(b.op)),
    scopes: [...scopes.values()],
  };
}

export function inspectModel(file: string, opts: InspectOptions = {}): InspectReport {
  const model = readModelFile(file);
  const head = {
    file,
    irVersion: Number(model.irVersion),
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
    batch: opts.batch ?? null,
  };
  const { nodes, opset } = modelNodes(model, file);
  const unsupported = findUnsupported(nodes, opset);
  if (unsupported.length) return { ...head, opset, ...rawSummary(model, nodes.length), unsupported };
  const g = importModel(model, { baseDir: dirname(file), file }, opts);
  return { ...head, opset, ...summarize(g), unsupported };
}

/** What can be told without importing: used when some ops are unsupported. */
function rawSummary(model: ModelP, nodeCount: number): Pick<InspectReport, 'inputs' | 'outputs' | 'parameters' | 'state' | 'constants' | 'nodes' | 'flops' | 'ops' | 'scopes'> {
  const gp = model.graph!;
  const inits = new Set((gp.initializer ?? []).map((t) => t.name));
  const vi = (v: { name?: string; type?: { tensorType?: { elemType?: number; shape?: { dim?: { dimValue?: number; dimParam?: string }[] } } } }): TensorInfo => ({
    name: v.name ?? '',
    dtype: onnxTypeName(v.type?.tensorType?.elemType ?? 0),
    shape: (v.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue ?? 0))),
  });
  const ops = new Map<string, OpRow>();
  for (const n of gp.node ?? []) {
    const r = ops.get(n.opType ?? '') ?? { op: n.opType ?? '', count: 0, flops: 0, bytes: 0 };
    r.count++;
    ops.set(r.op, r);
  }
  const count = (gp.initializer ?? []).reduce((a, t) => a + (t.dims ?? []).reduce((x, y) => x * Number(y), 1), 0);
  return {
    inputs: (gp.input ?? []).filter((v) => !inits.has(v.name)).map(vi),
    outputs: (gp.output ?? []).map(vi),
    parameters: { count, bytes: 0, tensors: inits.size },
    state: { count: 0, bytes: 0, tensors: 0 },
    constants: { count: 0, bytes: 0, tensors: 0 },
    nodes: nodeCount,
    flops: 0,
    ops: [...ops.values()].sort((a, b) => b.count - a.count),
    scopes: [],
  };
}

export function renderInspect(r: InspectReport): string {
  const out: string[] = [];
  const batch = r.batch === null ? 'symbolic' : String(r.batch);
  out.push(`${r.file}: ONNX IR ${r.irVersion}, opset ${r.opset}${r.producer ? `, from ${r.producer}` : ''}; batch ${batch}`);
  const io = (title: string, vs: TensorInfo[]) => {
    out.push('', title);
    out.push(table(['name', 'dtype', 'shape'], vs.map((v) => [v.name, v.dtype, formatShape(v.shape)])));
  };
  io('inputs', r.inputs);
  io('outputs', r.outputs);
  out.push('');
  if (r.unsupported.length) {
    out.push(`initializers  ${formatCount(r.parameters.count)} elements in ${r.parameters.tensors} tensors`);
    out.push('', `unsupported ops: ${r.unsupported.length} node${r.unsupported.length > 1 ? 's' : ''}`);
    out.push(table(['node', 'op', 'why'], r.unsupported.map((u) => [u.node, u.domain ? `${u.domain}:${u.op}` : u.op, u.reason])));
    out.push('', 'ops');
    out.push(table(['op', 'nodes'], r.ops.map((o) => [o.op, String(o.count)])));
    return out.join('\n') + '\n';
  }
  const t = (s: { count: number; bytes: number; tensors: number }) => `${formatCount(s.count)} (${formatBytes(s.bytes)}) in ${s.tensors} tensors`;
  out.push(`parameters  ${t(r.parameters)}`);
  if (r.state.tensors) out.push(`state       ${t(r.state)}`);
  if (r.constants.tensors) out.push(`constants   ${t(r.constants)}`);
  out.push(`nodes       ${formatCount(r.nodes)}`);
  out.push(`forward     ${formatFlops(r.flops)} per batch of ${r.batch ?? 1}`);
  out.push('', 'ops');
  out.push(table(['op', 'nodes', 'FLOPs', 'share', 'bytes moved'], r.ops.map((o) => [
    o.op, String(o.count), o.flops ? formatFlops(o.flops) : '—', r.flops ? formatPercent(o.flops / r.flops) : '—', formatBytes(o.bytes),
  ])));
  out.push('', 'scopes');
  out.push(table(['scope', 'nodes', 'params', 'FLOPs'], r.scopes.map((s) => [s.scope, String(s.nodes), formatCount(s.params), s.flops ? formatFlops(s.flops) : '—'])));
  out.push('', 'unsupported ops: none');
  return out.join('\n') + '\n';
}
