import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname } from 'node:path';
import { CleaveError } from '../errors.js';
import { dtypeFromOnnx } from '../ir/dtype.js';
import { type Tensor, tensorFromBytes } from '../ir/tensor.js';
import { readInitializers } from '../onnx/initializers.js';
import { externalDataFile, sha256 } from '../onnx/tensors.js';
import { planModelPath } from './io.js';
import type { Plan, PlanValue } from './types.js';

/**
 * The parameters and states a rank holds: those its stages' programs read, and those its stages
 * add gradients to or write back (what the backends load, nothing more).
 */
export function rankWeightNames(plan: Plan, rank: number): string[] {
  const pp = plan.ranks[rank]?.ppRank;
  if (pp === undefined) throw new CleaveError(`the plan has no rank ${rank} (its world has ${plan.ranks.length})`);
  const held = new Set<number>();
  const weight = (v: number): void => {
    const k = plan.values[v]?.kind;
    if (k === 'param' || k === 'state') held.add(v);
  };
  for (const s of plan.stages) {
    if (s.ppRank !== pp) continue;
    for (const prog of [s.forward, s.backwardB, s.backwardW]) for (const i of prog) for (const v of plan.nodes[i]!.inputs) if (v >= 0) weight(v);
    for (const g of s.grads) weight(g.param);
    for (const st of s.states) weight(st.state);
  }
  return [...held].sort((a, b) => a - b).map((v) => plan.values[v]!.name);
}

/** Every parameter and state of the plan, by name. */
export const allWeightNames = (plan: Plan): string[] => plan.values.filter((v) => v.kind === 'param' || v.kind === 'state').map((v) => v.name);

export interface WeightSource {
  /** The plan's file: its model is found beside it first (plan and model moved together). */
  planFile?: string;
  /** Another ONNX file to take the weights from, by initializer name (`cleave run --weights`). */
  from?: string;
}

/** What a read did: bytes read by reference, and values decoded by name from a whole model. */
export interface WeightReadStats { referenced: number; bytes: number; byName: number }

/**
 * The initial values of `names` (parameters and states of the plan): read from the byte ranges the
 * plan references (each checked against its SHA-256), so a rank reads its own bytes and nothing
 * else; where the plan has no range (values ONNX keeps in typed fields, plans before version 6) or
 * `from` names another file, decoded by initializer name from that model.
 */
export function readPlanWeights(plan: Plan, names: readonly string[], source: WeightSource = {}, stats?: WeightReadStats): Map<string, Tensor> {
  const byValue = new Map(plan.values.map((v) => [v.name, v]));
  const wanted = names.map((n) => {
    const v = byValue.get(n);
    if (!v || (v.kind !== 'param' && v.kind !== 'state')) throw new CleaveError(`the plan has no parameter or state '${n}'`);
    return v;
  });
  if (source.from) {
    if (stats) stats.byName += wanted.length;
    return readInitializers(source.from, names);
  }
  const model = source.planFile ? planModelPath(plan, source.planFile) : plan.model.source;
  const out = new Map<string, Tensor>();
  const byName: PlanValue[] = [];
  const ranged = new Map<string, PlanValue[]>();
  for (const v of wanted) {
    if (v.weight?.kind !== 'bytes') byName.push(v);
    else if (ranged.has(v.weight.file)) ranged.get(v.weight.file)!.push(v);
    else ranged.set(v.weight.file, [v]);
  }
  for (const [file, values] of ranged) readRanges(model, file, values, source.planFile ?? model, out, stats);
  if (byName.length) {
    const decoded = readInitializers(model, byName.map((v) => v.weight?.kind === 'initializer' ? v.weight.name : v.name));
    byName.forEach((v) => out.set(v.name, decoded.get(v.weight?.kind === 'initializer' ? v.weight.name : v.name)!));
    if (stats) stats.byName += byName.length;
  }
  return new Map(names.map((n) => [n, out.get(n)!]));
}

/** The file a reference names: the model itself, or an external data file that must lie in its folder. */
function referencedFile(model: string, file: string): string {
  return file ? externalDataFile(dirname(model), file, `${model}: the plan's weights`).real : model;
}

function readRanges(model: string, file: string, values: readonly PlanValue[], planFile: string, out: Map<string, Tensor>, stats?: WeightReadStats): void {
  const path = referencedFile(model, file);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new CleaveError(`${path}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); the plan reads weights from it`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new CleaveError(`${path}: is not a regular file; the plan reads weights from it`);
    for (const v of values) {
      const w = v.weight as Extract<PlanValue['weight'], { kind: 'bytes' }>;
      const changed = `: the model changed since ${planFile} was compiled from it; recompile the plan, or give the weights with --weights`;
      if (w.offset + w.length > st.size) throw new CleaveError(`${path}: is ${st.size} bytes, but '${v.name}' lies at [${w.offset}, ${w.offset + w.length})${changed}`);
      const bytes = new Uint8Array(w.length);
      for (let at = 0; at < w.length;) {
        const n = readSync(fd, bytes, at, w.length - at, w.offset + at);
        if (n <= 0) throw new CleaveError(`${path}: ended while reading '${v.name}'${changed}`);
        at += n;
      }
      if (sha256(bytes) !== w.sha256) throw new CleaveError(`${path}: the bytes of '${v.name}' at [${w.offset}, ${w.offset + w.length}) are not those compiled${changed}`);
      out.set(v.name, tensorFromBytes(dtypeFromOnnx(w.dtype, v.name), w.shape, bytes, `${path}: '${v.name}'`));
      if (stats) { stats.referenced++; stats.bytes += w.length; }
    }
  } finally {
    closeSync(fd);
  }
}
