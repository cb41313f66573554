// Mutations of ONNX models: structural ones on the decoded protobuf (attributes, dims, nodes,
// edges, cycles, opsets, huge shape computations, external data, local functions, partition
// annotations) and byte-level ones on the encoded file (bit flips, truncation, splices). Each
// returns the files of one case and a one-line description of what was changed.
import { encodeModel } from '../../src/core/onnx/codec.js';
import type { AttributeP, Dimension, GraphP, ModelP, NodeP, TensorP, ValueInfoP } from '../../src/core/onnx/proto.js';
import { ATTR } from '../../src/core/onnx/schema.js';
import { EDGE_FLOATS, EDGE_INTS, type Rng } from './prng.js';

export interface BaseModel {
  /** Short name (the fixture's). */
  name: string;
  model: ModelP;
  bytes: Uint8Array;
  /** External data beside the model: file name → bytes (copied into each case's folder). */
  sideFiles: Map<string, Uint8Array>;
}

export interface ModelCase {
  /** What was done, in a line. */
  desc: string;
  /** The family of mutation (for the table). */
  family: string;
  /** Files of the case: 'model.onnx' and whatever lies beside it. */
  files: Map<string, Uint8Array>;
  /** Symlinks to make in the case folder: name → target (external data pointing elsewhere). */
  links?: Map<string, string>;
}

const enc = new TextEncoder();
const clone = <T>(x: T): T => structuredClone(x);
const nodesOf = (g: GraphP): NodeP[] => (g.node ??= []);

/** Names of every value in the graph: what dangling-edge and rename mutations draw from. */
function valueNames(g: GraphP): string[] {
  const s = new Set<string>();
  for (const n of g.node ?? []) for (const v of [...(n.input ?? []), ...(n.output ?? [])]) if (v) s.add(v);
  for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.initializer ?? [])]) if (v.name) s.add(v.name);
  return [...s];
}

const HUGE_DIMS = [0, -1, -7, 2 ** 31, 2 ** 31 - 1, 2 ** 40, 1e15, 2 ** 53, 3];

function mutateAttribute(r: Rng, m: ModelP): string | undefined {
  const nodes = nodesOf(m.graph!).filter((n) => n.attribute?.length);
  if (!nodes.length) return undefined;
  const n = r.pick(nodes);
  const attrs = n.attribute!;
  const a = r.pick(attrs);
  const what = r.int(12);
  const at = `node '${n.name}' (${n.opType}) attribute '${a.name}'`;
  switch (what) {
    case 0: { const v = r.pick(EDGE_INTS); a.i = v; a.ints = a.ints?.length ? a.ints.map(() => v) : a.ints; return `${at}: every int set to ${v}`; }
    case 1: { a.ints = []; a.floats = []; a.strings = []; return `${at}: lists emptied`; }
    case 2: { const t = r.pick([ATTR.FLOAT, ATTR.INT, ATTR.STRING, ATTR.TENSOR, ATTR.GRAPH, ATTR.FLOATS, ATTR.INTS, ATTR.STRINGS, 0, 99, -1]); a.type = t; return `${at}: type set to ${t} (values kept)`; }
    case 3: { const f = r.pick(EDGE_FLOATS); a.f = f; a.floats = a.floats?.length ? a.floats.map(() => f) : [f]; return `${at}: float(s) set to ${f}`; }
    case 4: { attrs.splice(attrs.indexOf(a), 1); return `${at}: removed`; }
    case 5: { attrs.push({ ...clone(a), i: r.pick(EDGE_INTS) }); return `${at}: duplicated with another value`; }
    case 6: { a.ints = Array.from({ length: r.pick([1, 5, 9, 100, 5000]) }, () => r.pick(EDGE_INTS)); a.type = ATTR.INTS; return `${at}: ints set to ${a.ints.length} edge values (${a.ints.slice(0, 5).join(', ')}…)`; }
    case 7: { a.s = enc.encode(r.pick(['', 'bogus', 'NOTSET', '\u0000', 'x'.repeat(10000)])); a.type = ATTR.STRING; return `${at}: made a string`; }
    case 8: { a.name = r.pick(['', 'bogus_attr', a.name + '_']); return `${at}: renamed to '${a.name}'`; }
    case 9: { attrs.push({ name: 'unknown_attribute', type: ATTR.INT, i: 1 }); return `node '${n.name}' (${n.opType}): an unknown attribute added`; }
    case 10: { a.t = { dims: [r.pick(HUGE_DIMS)], dataType: r.pick([1, 7, 8, 0, 99]), rawData: new Uint8Array(r.pick([0, 3, 8])) }; a.type = ATTR.TENSOR; return `${at}: made a tensor of dims [${a.t.dims}] type ${a.t.dataType}`; }
    default: { a.i = r.pick([2 ** 31 - 1, -(2 ** 31), 1e15]); a.type = ATTR.INT; return `${at}: made int ${a.i}`; }
  }
}

function mutateConstantTensor(r: Rng, m: ModelP): string | undefined {
  const g = m.graph!;
  const tensors: { t: TensorP; where: string }[] = [
    ...(g.initializer ?? []).map((t) => ({ t, where: `initializer '${t.name}'` })),
    ...nodesOf(g).flatMap((n) => (n.attribute ?? []).filter((a) => a.t).map((a) => ({ t: a.t!, where: `node '${n.name}' attribute '${a.name}' tensor` }))),
  ];
  if (!tensors.length) return undefined;
  const what = r.int(11);
  // Integer constants (shapes, axes, indices) are few beside the weights: picked on purpose.
  const ints = tensors.filter((x) => x.t.dataType === 7);
  const { t, where } = r.pick(what >= 9 && ints.length ? ints : tensors);
  switch (what) {
    case 0: { const i = r.int(Math.max(1, t.dims?.length ?? 1)); t.dims = [...(t.dims ?? [1])]; t.dims[i] = r.pick(HUGE_DIMS); return `${where}: dim ${i} set to ${t.dims[i]}`; }
    case 1: { t.dims = [...(t.dims ?? []), r.pick([1, 2, 0])]; return `${where}: an extra dim (data unchanged)`; }
    case 2: { t.dataType = r.pick([0, 2, 6, 7, 8, 9, 10, 11, 16, 17, 99, -1]); return `${where}: data type set to ${t.dataType}`; }
    case 3: { if (!t.rawData?.length) return undefined; t.rawData = t.rawData.subarray(0, r.int(t.rawData.length)); return `${where}: raw data truncated to ${t.rawData.length} bytes`; }
    case 4: { if (!t.rawData?.length) return undefined; const b = new Uint8Array(t.rawData.length + r.range(1, 7)); b.set(t.rawData); t.rawData = b; return `${where}: raw data extended to ${b.length} bytes`; }
    case 5: { t.rawData = new Uint8Array(0); return `${where}: raw data removed`; }
    case 6: { if (!t.rawData?.length) return undefined; const b = new Uint8Array(t.rawData); const f = new Float32Array(b.buffer, 0, b.length >> 2); for (let i = 0; i < f.length; i++) if (r.chance(0.2)) f[i] = r.pick([NaN, Infinity, -Infinity, 1e38, 3e9]); t.rawData = b; return `${where}: values set to NaN/Inf/huge`; }
    case 7: { t.dims = []; return `${where}: made a scalar (data unchanged)`; }
    case 9: case 10: {
      // An integer constant (a shape, axes, indices, split sizes) given another value: the importer's
      // shape computations and folding get values they do not expect.
      if (t.dataType !== 7) return undefined;
      const vals = t.int64Data?.length ? [...t.int64Data].map(Number) : t.rawData?.length ? Array.from(new BigInt64Array(new Uint8Array(t.rawData).buffer), Number) : [];
      if (!vals.length) return undefined;
      const k = r.int(vals.length);
      vals[k] = r.pick([-1, 0, 1, -2, 2 ** 31 - 1, -(2 ** 31), 1e12, vals[k]! + 1, vals[k]! * 2, -vals[k]!]);
      t.int64Data = vals; t.rawData = new Uint8Array(0);
      return `${where}: int64 element ${k} set to ${vals[k]} ([${vals.slice(0, 6).join(', ')}${vals.length > 6 ? ', …' : ''}])`;
    }
    default: { g.initializer = [...(g.initializer ?? []), clone(t)]; if (r.chance(0.5)) g.initializer.at(-1)!.dims = [1]; return `${where}: duplicated${g.initializer.at(-1)!.dims?.length === 1 ? ' with another shape' : ''}`; }
  }
}

function mutateDims(r: Rng, m: ModelP): string | undefined {
  const g = m.graph!;
  const vis: { vi: ValueInfoP; where: string }[] = [
    ...(g.input ?? []).map((vi) => ({ vi, where: `input '${vi.name}'` })),
    ...(g.output ?? []).map((vi) => ({ vi, where: `output '${vi.name}'` })),
    ...(g.valueInfo ?? []).map((vi) => ({ vi, where: `value_info '${vi.name}'` })),
  ];
  const { vi, where } = r.pick(vis);
  const tt = vi.type?.tensorType;
  if (!tt) return undefined;
  const dims: Dimension[] = (tt.shape ??= {}).dim ??= [];
  switch (r.int(8)) {
    case 0: { if (!dims.length) return undefined; const i = r.int(dims.length); dims[i] = { dimValue: r.pick(HUGE_DIMS) }; return `${where}: dim ${i} set to ${dims[i]!.dimValue}`; }
    case 1: { if (!dims.length) return undefined; const i = r.int(dims.length); dims[i] = { dimParam: r.pick(['N', 'M', 'seq', '', 'x y', '-1']) }; return `${where}: dim ${i} made symbolic '${dims[i]!.dimParam}'`; }
    case 2: { dims.push({ dimValue: r.pick([1, 2, 0]) }); return `${where}: a dim added`; }
    case 3: { if (!dims.length) return undefined; dims.splice(r.int(dims.length), 1); return `${where}: a dim removed`; }
    case 4: { tt.elemType = r.pick([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99, -5]); return `${where}: element type set to ${tt.elemType}`; }
    case 5: { tt.shape = {}; return `${where}: shape removed (rank unknown)`; }
    case 6: { delete vi.type; return `${where}: type removed`; }
    default: { if (!dims.length) return undefined; const i = r.int(dims.length); dims[i] = { dimValue: r.pick([5, 7]), dimParam: 'N' }; return `${where}: dim ${i} has both a value and a name`; }
  }
}

function mutateNodes(r: Rng, m: ModelP): string | undefined {
  const g = m.graph!;
  const nodes = nodesOf(g);
  if (!nodes.length) return undefined;
  const i = r.int(nodes.length);
  const n = nodes[i]!;
  const at = `node '${n.name}' (${n.opType})`;
  const names = valueNames(g);
  switch (r.int(14)) {
    case 0: nodes.splice(i, 1); return `${at}: dropped`;
    case 1: nodes.splice(r.int(nodes.length + 1), 0, clone(n)); return `${at}: duplicated (two producers of its outputs)`;
    case 2: { const o = r.pick(nodes); n.name = o.name; return `${at}: renamed to another node's name '${o.name}'`; }
    case 3: n.name = ''; return `${at}: name emptied`;
    case 4: { if (!n.input?.length) return undefined; const k = r.int(n.input.length); n.input[k] = r.pick(['dangling_value', '', 'x'.repeat(300)]); return `${at}: input ${k} renamed to '${n.input[k]!.slice(0, 20)}'`; }
    case 5: { if (!n.output?.length) return undefined; const k = r.int(n.output.length); n.output[k] = r.pick(['', 'renamed_output', r.pick(names)]); return `${at}: output ${k} renamed to '${n.output[k]}'`; }
    case 6: { n.input = [...(n.input ?? []), r.pick(names)]; return `${at}: an extra input`; }
    case 7: { if (!n.input?.length) return undefined; n.input.splice(r.int(n.input.length), 1); return `${at}: an input removed`; }
    case 8: { n.output = [...(n.output ?? []), `extra_out_${i}`]; return `${at}: an extra output`; }
    case 9: { n.opType = r.pick(['Add', 'MatMul', 'Relu', 'Reshape', 'Softmax', 'Gemm', 'Conv', 'Concat', 'Transpose', 'LayerNormalization', 'NoSuchOp', '', 'Loop', 'If']); return `${at}: op type set to '${n.opType}'`; }
    case 10: { n.domain = r.pick(['com.microsoft', 'ai.onnx.ml', 'x', 'ai.onnx']); return `${at}: domain set to '${n.domain}'`; }
    case 11: { if (!n.input?.length || n.input.length < 2) return undefined; n.input.reverse(); return `${at}: inputs reversed`; }
    case 12: { if (!n.input?.length) return undefined; const k = r.int(n.input.length); n.input[k] = r.pick(names); return `${at}: input ${k} rewired to '${n.input[k]}'`; }
    default: { n.input = []; n.output = []; return `${at}: inputs and outputs removed`; }
  }
}

function makeCycle(r: Rng, m: ModelP): string | undefined {
  const nodes = nodesOf(m.graph!);
  if (nodes.length < 2) return undefined;
  const i = r.int(nodes.length - 1), j = r.range(i + 1, nodes.length - 1);
  const a = nodes[i]!, b = nodes[j]!;
  if (!a.input?.length || !b.output?.length) return undefined;
  if (r.chance(0.3)) { a.input[0] = a.output![0]!; return `node '${a.name}' reads its own output (a self-loop)`; }
  a.input[r.int(a.input.length)] = b.output[0]!;
  return `cycle: node '${a.name}' reads '${b.output[0]}', which node '${b.name}' computes from it`;
}

function mutateGraphOutputs(r: Rng, m: ModelP): string {
  const g = m.graph!;
  switch (r.int(6)) {
    case 0: g.output = []; return 'graph outputs removed';
    case 1: g.output = [...(g.output ?? []), clone(g.output![0]!)]; return 'graph output duplicated';
    case 2: g.output![0]!.name = 'no_such_value'; return 'graph output renamed to a value nothing computes';
    case 3: g.output = [...(g.output ?? []), clone(g.input![0]!)]; return 'a graph input listed as an output too';
    case 4: g.input = []; return 'graph inputs removed';
    default: g.input = [...(g.input ?? []), clone(g.input![0]!)]; return 'graph input duplicated';
  }
}

function mutateVersions(r: Rng, m: ModelP): string {
  switch (r.int(6)) {
    case 0: { const v = r.pick([0, 1, 7, 12, 24, 25, 100, 1e6, -1, 2 ** 31 - 1]); m.opsetImport = (m.opsetImport ?? []).map((o) => ({ ...o, version: v })); return `default opset set to ${v}`; }
    case 1: m.opsetImport = []; return 'opset imports removed';
    case 2: m.opsetImport = [...(m.opsetImport ?? []), { domain: '', version: r.pick([13, 17, 21, 9]) }]; return 'a second default-domain opset import';
    case 3: { const v = r.pick([0, 1, 2, 3, 10, 11, 12, 99, -1]); m.irVersion = v; return `IR version set to ${v}`; }
    case 4: m.opsetImport = (m.opsetImport ?? []).map((o) => ({ ...o, domain: 'ai.onnx' })); return "default opset's domain written 'ai.onnx'";
    default: m.opsetImport = [{ domain: 'com.microsoft', version: 1 }]; return 'only a foreign-domain opset';
  }
}

/** A node with constant inputs inserted at the front: the importer folds it (it computes constants). */
function insertHuge(r: Rng, m: ModelP): string {
  const g = m.graph!;
  // Names unique within the case: two insertions must not collide (two producers of one value).
  const u = `_${r.int(1e6)}`;
  const i64 = (name: string, vals: number[]): NodeP => ({
    opType: 'Constant', name: `fz_${name}${u}`, input: [], output: [name + u],
    attribute: [{ name: 'value', type: ATTR.TENSOR, t: { dims: [vals.length], dataType: 7, int64Data: vals } }],
  });
  const big = (): number => r.pick([1e5, 1 << 20, 2 ** 31, 1e9, 1e12, -1, 0]);
  const nodes = nodesOf(g);
  const float0 = g.initializer?.find((t) => t.dataType === 1)?.name;
  let added: NodeP[], desc: string;
  switch (r.int(5)) {
    case 0: { const shape = [big(), big()]; added = [i64('fz_shape', shape), { opType: 'ConstantOfShape', name: 'fz_cos' + u, input: ['fz_shape' + u], output: ['fz_out' + u] }]; desc = `ConstantOfShape of [${shape}]`; break; }
    case 1: { const shape = [big(), 4, big()]; added = [i64('fz_shape', shape), ...(float0 ? [] : []), { opType: 'Expand', name: 'fz_expand' + u, input: [float0 ?? 'fz_shape' + u, 'fz_shape' + u], output: ['fz_out' + u] }]; desc = `Expand of ${float0 ?? 'a constant'} to [${shape}]`; break; }
    case 2: { const lim = big(), d = r.pick([1, 0, -1, 1e-9]); added = [i64('fz_a', [0]), i64('fz_b', [lim]), i64('fz_d', [d]), { opType: 'Range', name: 'fz_range' + u, input: ['fz_a' + u, 'fz_b' + u, 'fz_d' + u], output: ['fz_out' + u] }]; for (const n of added.slice(0, 3)) n.attribute![0]!.t!.dims = []; desc = `Range(0, ${lim}, ${d})`; break; }
    case 3: { const reps = [big(), big()]; added = [i64('fz_reps', reps), { opType: 'Tile', name: 'fz_tile' + u, input: [float0 ?? 'fz_reps' + u, 'fz_reps' + u], output: ['fz_out' + u] }]; desc = `Tile of ${float0 ?? 'a constant'} by [${reps}]`; break; }
    default: { const shape = [big(), big()]; added = [i64('fz_shape', shape), { opType: 'Reshape', name: 'fz_reshape' + u, input: [float0 ?? 'fz_shape' + u, 'fz_shape' + u], output: ['fz_out' + u] }]; desc = `Reshape of ${float0 ?? 'a constant'} to [${shape}]`; break; }
  }
  nodes.unshift(...added);
  // Sometimes its result is also made a graph output, so it is not dead code either.
  if (r.chance(0.5)) { g.output = [...(g.output ?? []), { name: 'fz_out' + u }]; desc += ' (a graph output)'; }
  return `inserted ${desc}`;
}

function mutateExternal(r: Rng, m: ModelP, c: { links: Map<string, string>; files: Map<string, Uint8Array> }): string | undefined {
  const ext = (m.graph!.initializer ?? []).filter((t) => t.dataLocation === 1);
  if (!ext.length) {
    // Inline weights made external: point one at a file that may or may not be there.
    const t = r.pick(m.graph!.initializer ?? []);
    if (!t) return undefined;
    t.dataLocation = 1; t.externalData = [{ key: 'location', value: r.pick(['w.bin', 'model.onnx', '.', '']) }];
    return `initializer '${t.name}' made external at '${t.externalData[0]!.value}'`;
  }
  const t = r.pick(ext);
  const kv = (t.externalData ??= []);
  const set = (k: string, v: string): void => { const e = kv.find((x) => x.key === k); if (e) e.value = v; else kv.push({ key: k, value: v }); };
  const at = `initializer '${t.name}' external data`;
  switch (r.int(10)) {
    case 0: { const v = r.pick(['-1', '-8192', '1e20', '110336', '110335', '9007199254740993', '0.5', 'abc', '', 'NaN', '0x10']); set('offset', v); return `${at}: offset '${v}'`; }
    case 1: { const v = r.pick(['-1', '0', '1', '1e20', '999999999', '4', '8191', 'abc', '', '2147483648']); set('length', v); return `${at}: length '${v}'`; }
    case 2: { const v = r.pick(['../gpt_external.onnx.data', '/etc/passwd', 'missing.data', '', '.', 'sub/../gpt_external.onnx.data', 'model.onnx', '/dev/zero', 'gpt_external.onnx.data\u0000x']); set('location', v); return `${at}: location '${v}'`; }
    case 3: { t.externalData = kv.filter((e) => e.key !== 'location'); return `${at}: location removed`; }
    case 4: { t.dataLocation = 0; return `${at}: data_location set to default (no inline data)`; }
    case 5: { kv.push({ key: 'offset', value: '4' }); return `${at}: a second 'offset' entry`; }
    case 6: { set('location', 'link.data'); c.links.set('link.data', r.pick(['/etc/passwd', '/dev/zero', '/tmp', 'gpt_external.onnx.data', '/nonexistent'])); return `${at}: location a symlink to ${c.links.get('link.data')}`; }
    case 7: { const data = c.files.get('gpt_external.onnx.data'); if (!data) return undefined; c.files.set('gpt_external.onnx.data', data.subarray(0, r.int(data.length))); return `data file truncated to ${c.files.get('gpt_external.onnx.data')!.length} bytes`; }
    case 8: { c.files.delete('gpt_external.onnx.data'); return 'data file removed'; }
    default: { t.dims = [...(t.dims ?? [])].map((d) => d * 2); return `${at}: dims doubled (length entry unchanged)`; }
  }
}

function mutateFunctions(r: Rng, m: ModelP): string {
  const g = m.graph!;
  const n = r.pick(nodesOf(g));
  const domain = 'fz.local';
  const recursive = r.chance(0.5);
  m.opsetImport = [...(m.opsetImport ?? []), { domain, version: 1 }];
  const body: NodeP[] = recursive
    ? [{ opType: 'Fz', domain, name: 'inner', input: ['a'], output: ['b'] }]
    : [{ opType: 'Relu', name: 'inner', input: ['a'], output: ['c'] }, { opType: r.pick(['Identity', 'Relu']), name: 'inner2', input: [r.pick(['c', 'missing'])], output: ['b'] }];
  m.functions = [...(m.functions ?? []), { name: 'Fz', domain, input: ['a'], output: ['b'], node: body, opsetImport: [{ domain: '', version: 17 }, { domain, version: 1 }] }];
  if (r.chance(0.3)) m.functions.push(clone(m.functions.at(-1)!));
  const k = nodesOf(g).indexOf(n);
  nodesOf(g).splice(k + 1, 0, { opType: 'Fz', domain, name: 'fz_call', input: [n.output?.[0] ?? ''], output: ['fz_fn_out'] });
  g.output = [...(g.output ?? []), { name: 'fz_fn_out' }];
  return `a model-local function${recursive ? ' that calls itself' : ''} called after node '${n.name}'${m.functions.length > 1 ? ' (defined twice)' : ''}`;
}

function mutatePartition(r: Rng, m: ModelP): string {
  const n = r.pick(nodesOf(m.graph!));
  const v = r.pick(['-1', '1.5', 'abc', '1e9', '', '2', '99', '0x1']);
  if (r.chance(0.5)) n.metadataProps = [...(n.metadataProps ?? []), { key: 'partition', value: v }];
  else n.deviceConfigurations = [{ configurationId: 'x', pipelineStage: Number(v) || r.pick([-1, 2 ** 31 - 1, 7]) }];
  return `node '${n.name}': partition annotation '${v}'`;
}

// --- byte level -------------------------------------------------------------------------------

function byteMutation(r: Rng, bytes: Uint8Array): { bytes: Uint8Array; desc: string } {
  const b = new Uint8Array(bytes);
  switch (r.int(7)) {
    case 0: { const k = r.range(1, 8); const at: number[] = []; for (let i = 0; i < k; i++) { const p = r.int(b.length); b[p]! ^= 1 << r.int(8); at.push(p); } return { bytes: b, desc: `${k} bit flip(s) at byte(s) ${at.join(', ')}` }; }
    case 1: { const n = r.int(b.length); return { bytes: b.subarray(0, n), desc: `truncated to ${n} of ${b.length} bytes` }; }
    case 2: { const p = r.int(b.length), n = r.range(1, 64); for (let i = p; i < Math.min(b.length, p + n); i++) b[i] = r.int(256); return { bytes: b, desc: `${n} random bytes at ${p}` }; }
    case 3: { const p = r.int(b.length); b[p] = r.pick([0x00, 0xff, 0x80, 0x7f]); return { bytes: b, desc: `byte ${p} set to ${b[p]}` }; }
    case 4: { const extra = Uint8Array.from({ length: r.range(1, 100) }, () => r.int(256)); const out = new Uint8Array(b.length + extra.length); out.set(b); out.set(extra, b.length); return { bytes: out, desc: `${extra.length} random bytes appended` }; }
    case 5: { const out = new Uint8Array(b.length * 2); out.set(b); out.set(b, b.length); return { bytes: out, desc: 'file concatenated with itself (protobuf merges the two)' }; }
    default: { const p = r.int(b.length); const q = r.int(b.length); const out = new Uint8Array(b.length + 16); out.set(b.subarray(0, p)); out.set(b.subarray(q, q + 16), p); out.set(b.subarray(p), p + Math.min(16, b.length - q)); return { bytes: out.subarray(0, b.length + Math.min(16, b.length - q)), desc: `16 bytes from ${q} spliced in at ${p}` }; }
  }
}

type Structural = (r: Rng, m: ModelP, c: { links: Map<string, string>; files: Map<string, Uint8Array> }) => string | undefined;
const FAMILIES: readonly (readonly [number, string, Structural])[] = [
  [14, 'attribute', mutateAttribute],
  [10, 'tensor', mutateConstantTensor],
  [10, 'dims', mutateDims],
  [16, 'node', mutateNodes],
  [5, 'cycle', makeCycle],
  [4, 'graph-io', mutateGraphOutputs],
  [5, 'version', mutateVersions],
  [7, 'huge-op', insertHuge],
  [3, 'function', mutateFunctions],
  [3, 'partition', mutatePartition],
];

/**
 * One mutated case of `base`: most are structural (1–3 mutations of the decoded model), some
 * byte-level on the encoded file; external-data mutations where the model has external data.
 */
export function mutateModel(r: Rng, base: BaseModel): ModelCase {
  const files = new Map(base.sideFiles);
  const links = new Map<string, string>();
  if (r.chance(0.2)) {
    const { bytes, desc } = byteMutation(r, base.bytes);
    files.set('model.onnx', bytes);
    return { desc: `${base.name}: ${desc}`, family: 'bytes', files, links };
  }
  const m = clone(base.model);
  const descs: string[] = [];
  let family = '';
  const hasExternal = base.sideFiles.size > 0;
  const k = r.weighted([[6, 1], [3, 2], [1, 3]] as const);
  for (let tries = 0; descs.length < k && tries < 20; tries++) {
    const [fam, f] = hasExternal && r.chance(0.5) ? ['external', mutateExternal] as const : (() => { const [, n, g] = r.weighted(FAMILIES.map((x) => [x[0], x] as const)); return [n, g] as const; })();
    let d: string | undefined;
    try {
      d = f(r, m, { links, files });
    } catch {
      d = undefined; // a mutation that does not apply to this model (an absent field)
    }
    if (d) { descs.push(d); family ||= fam; }
  }
  let bytes: Uint8Array;
  try {
    bytes = encodeModel(m);
  } catch (e) {
    // protobufjs refuses some values (a string where bytes go): the mutation cannot be written.
    bytes = base.bytes;
    descs.push(`(not encodable: ${(e as Error).message}; the original written)`);
  }
  if (r.chance(0.05)) { const x = byteMutation(r, bytes); bytes = x.bytes; descs.push(x.desc); }
  files.set('model.onnx', bytes);
  return { desc: `${base.name}: ${descs.join('; ') || 'unchanged'}`, family: family || 'none', files, links };
}
