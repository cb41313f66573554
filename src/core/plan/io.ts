import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { CleaveError } from '../errors.js';
import { planOptimizer } from './optimizer.js';
import { writeFileAtomic } from '../util/fs.js';
import { PLAN_MAGIC, PlanProto } from './schema.js';
import { INSTR_KINDS, PLAN_VERSION, type Plan, type WeightRef, type Workspace } from './types.js';

type Wire = Record<string, unknown>;

function toWire(p: Plan): Wire {
  return {
    ...p,
    stages: p.stages.map((s) => ({
      index: s.index, ppRank: s.ppRank, forward: s.forward, backwardB: s.backwardB, backwardW: s.backwardW, params: s.params,
      forwardWorkspace: s.workspaces.forward, backwardBWorkspace: s.workspaces.backwardB, backwardWWorkspace: s.workspaces.backwardW,
      fwdMs: s.fwdMs, bMs: s.bMs, wMs: s.wMs,
      grads: s.grads.map((g) => ({ a: g.param, b: g.value })), states: s.states.map((g) => ({ a: g.state, b: g.value })),
    })),
    ranks: p.ranks.map((r) => ({
      rank: r.rank, ppRank: r.ppRank, dpRank: r.dpRank, bubble: r.bubble, arenaBytes: r.memory.arenaBytes, allocations: r.memory.allocations,
      instructions: r.instructions.map((i) => ({ ...i, kind: INSTR_KINDS.indexOf(i.kind) + 1 })),
    })),
  };
}

const ws = (w: Wire | undefined): Workspace => ({ bytes: Number(w?.['bytes'] ?? 0), slots: ((w?.['slots'] as Wire[] | undefined) ?? []).map((s) => ({ value: Number(s['value'] ?? 0), offset: Number(s['offset'] ?? 0), bytes: Number(s['bytes'] ?? 0) })) });

function fromWire(w: Wire): Plan {
  const arr = <T>(x: unknown): T[] => (x as T[] | undefined) ?? [];
  const p = w as unknown as Plan & { stages: Wire[]; ranks: Wire[] };
  return {
    ...p,
    // Version 1 plans did not record the seed; before version 4, the optimizer was a family name only.
    model: {
      ...p.model,
      lossSeedValue: Number(w['version']) >= 2 ? Number((p.model as { lossSeedValue?: number }).lossSeedValue ?? -1) : -1,
      sourceFromPlan: Number(w['version']) >= 4 ? String(p.model.sourceFromPlan ?? '') : '',
      optimizerConfig: Number(w['version']) >= 4 && p.model.optimizerConfig?.kind ? { ...p.model.optimizerConfig } : planOptimizer(p.model.optimizer || 'adamw'),
    },
    values: arr<Plan['values'][number] & { weight?: Wire | null }>(w['values']).map(({ weight, ...v }) => ({
      ...v, shape: arr<number>(v.shape).map(Number), ...(v.data && v.data.length ? { data: v.data } : { data: undefined }),
      ...(weight?.['kind'] ? { weight: weightFromWire(weight) } : {}),
    })),
    // Before version 6 the backward halves were spelled 'backward-B' and 'backward-W'.
    nodes: arr<Plan['nodes'][number]>(w['nodes']).map((n) => ({ ...n, phase: OLD_PHASES[n.phase] ?? n.phase, inputs: arr<number>(n.inputs), outputs: arr<number>(n.outputs), stage: n.stage ?? 0 })),
    stages: arr<Wire>(w['stages']).map((s) => ({
      index: Number(s['index'] ?? 0), ppRank: Number(s['ppRank'] ?? 0), forward: arr<number>(s['forward']), backwardB: arr<number>(s['backwardB']), backwardW: arr<number>(s['backwardW']),
      params: arr<number>(s['params']),
      workspaces: { forward: ws(s['forwardWorkspace'] as Wire), backwardB: ws(s['backwardBWorkspace'] as Wire), backwardW: ws(s['backwardWWorkspace'] as Wire) },
      fwdMs: Number(s['fwdMs'] ?? 0), bMs: Number(s['bMs'] ?? 0), wMs: Number(s['wMs'] ?? 0),
      grads: arr<Wire>(s['grads']).map((g) => ({ param: Number(g['a'] ?? 0), value: Number(g['b'] ?? 0) })),
      states: arr<Wire>(s['states']).map((g) => ({ state: Number(g['a'] ?? 0), value: Number(g['b'] ?? 0) })),
    })),
    tensors: arr<Plan['tensors'][number]>(w['tensors']).map((t) => ({ ...t, fromStage: t.fromStage ?? 0, toStage: t.toStage ?? 0, bytes: Number(t.bytes), id: t.id ?? 0, value: t.value ?? 0 })),
    groups: arr<Plan['groups'][number]>(w['groups']).map((g) => ({ ...g, id: g.id ?? 0, ranks: arr<number>(g.ranks) })),
    buckets: arr<Plan['buckets'][number]>(w['buckets']).map((b) => ({ ...b, id: b.id ?? 0, group: b.group ?? 0, stage: b.stage ?? 0, params: arr<number>(b.params), bytes: Number(b.bytes) })),
    ranks: arr<Wire>(w['ranks']).map((r) => ({
      rank: Number(r['rank'] ?? 0), ppRank: Number(r['ppRank'] ?? 0), dpRank: Number(r['dpRank'] ?? 0), bubble: Number(r['bubble'] ?? 0),
      memory: { arenaBytes: Number(r['arenaBytes'] ?? 0), allocations: arr<Wire>(r['allocations']).map((a) => ({ what: String(a['what'] ?? ''), offset: Number(a['offset'] ?? 0), bytes: Number(a['bytes'] ?? 0), first: Number(a['first'] ?? 0), last: Number(a['last'] ?? 0) })) },
      instructions: arr<Wire>(r['instructions']).map((i) => ({
        kind: INSTR_KINDS[Number(i['kind']) - 1]!, stage: Number(i['stage'] ?? 0), mb: Number(i['mb'] ?? 0), tensor: Number(i['tensor'] ?? 0),
        peer: Number(i['peer'] ?? 0), bucket: Number(i['bucket'] ?? 0), group: Number(i['group'] ?? 0), startMs: Number(i['startMs'] ?? 0), endMs: Number(i['endMs'] ?? 0),
      })),
    })),
  };
}

const OLD_PHASES: Record<string, string> = { 'backward-B': 'backwardB', 'backward-W': 'backwardW' };

function weightFromWire(w: Wire): WeightRef {
  const kind = String(w['kind']);
  if (kind === 'initializer') return { kind, name: String(w['name'] ?? '') };
  if (kind !== 'bytes') throw new Error(`a weight reference of unknown kind '${kind}'`);
  return {
    kind, file: String(w['file'] ?? ''), offset: Number(w['offset'] ?? 0), length: Number(w['length'] ?? 0), sha256: String(w['sha256'] ?? ''),
    dtype: Number(w['dtype'] ?? 0), shape: ((w['shape'] as unknown[] | undefined) ?? []).map(Number),
  };
}

/** The checksum line's lead: `sha256 ` then 64 hex digits and a newline, between the magic and the body (plans since version 5). */
const SUM_LEAD = new TextEncoder().encode('sha256 ');
const SUM_LINE = SUM_LEAD.length + 64 + 1;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/**
 * A plan file: the magic, a line `sha256 <hex of the body>`, then the protobuf body. The checksum
 * makes a damaged or hand-edited file an error before anything runs from it.
 */
export function encodePlan(p: Plan): Uint8Array {
  const body = PlanProto.encode(PlanProto.fromObject(toWire(p))).finish();
  // A plan of an older version (what compatibility tests write) has no checksum line, as then.
  const line = new TextEncoder().encode(p.version >= 5 ? `sha256 ${sha256(body)}\n` : '');
  const out = new Uint8Array(PLAN_MAGIC.length + line.length + body.length);
  out.set(PLAN_MAGIC);
  out.set(line, PLAN_MAGIC.length);
  out.set(body, PLAN_MAGIC.length + line.length);
  return out;
}

const startsWith = (b: Uint8Array, at: number, lead: Uint8Array): boolean => b.length >= at + lead.length && lead.every((x, i) => b[at + i] === x);

export function decodePlan(bytes: Uint8Array, file: string): Plan {
  if (!startsWith(bytes, 0, PLAN_MAGIC)) throw new CleaveError(`${file}: is not a cleave plan (write one with cleave compile)`);
  // Version 1–4 plans have the body right after the magic (its first byte is field 1's tag, never
  // 's'); later ones a checksum line first, which must match the body.
  let body = bytes.subarray(PLAN_MAGIC.length);
  let checksum: string | undefined;
  if (startsWith(bytes, PLAN_MAGIC.length, SUM_LEAD)) {
    const line = new TextDecoder().decode(bytes.subarray(PLAN_MAGIC.length, PLAN_MAGIC.length + SUM_LINE));
    const m = /^sha256 ([0-9a-f]{64})\n$/.exec(line);
    if (!m) throw new CleaveError(`${file}: the plan's checksum line is damaged`);
    body = bytes.subarray(PLAN_MAGIC.length + SUM_LINE);
    checksum = m[1]!;
    if (sha256(body) !== checksum) throw new CleaveError(`${file}: the plan's checksum does not match its contents (the file is damaged or was edited): recompile it with cleave compile`);
  }
  let wire: Wire;
  try {
    wire = PlanProto.toObject(PlanProto.decode(body), { longs: Number, defaults: true }) as Wire;
  } catch (e) {
    throw new CleaveError(`${file}: the plan is truncated or corrupt (${(e as Error).message})`);
  }
  const version = Number(wire['version'] ?? 0);
  if (version > PLAN_VERSION) throw new CleaveError(`${file}: plan version ${version} is newer than this cleave reads (${PLAN_VERSION}); update cleave`);
  if (version < 1) throw new CleaveError(`${file}: the plan has no version`);
  if (version >= 5 && !checksum) throw new CleaveError(`${file}: a version ${version} plan without its checksum line (the file is damaged)`);
  if (version < 5 && checksum) throw new CleaveError(`${file}: a version ${version} plan cannot carry a checksum line (the file is damaged)`);
  let plan: Plan;
  try {
    plan = fromWire(wire);
  } catch (e) {
    throw new CleaveError(`${file}: the plan is corrupt (${(e as Error).message})`);
  }
  return { ...plan, checksum: checksum ?? '' };
}

/** Writes a plan, recording its model relative to where the plan goes (so the two may move together). */
export function writePlan(file: string, p: Plan): void {
  const source = resolve(p.model.source);
  writeFileAtomic(file, encodePlan({ ...p, model: { ...p.model, source, sourceFromPlan: relative(dirname(resolve(file)), source) } }));
}

export function readPlan(file: string): Plan {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new CleaveError(`${file}: ${code === 'EISDIR' ? 'is a folder, not a plan file' : code === 'EACCES' ? 'cannot be read (permission denied)' : 'no such file'}`);
  }
  return decodePlan(bytes, file);
}

/**
 * The ONNX model a plan was compiled from, found from any working directory: beside the plan where
 * the plan says (plan and model moved together), else at the absolute path it was compiled from
 * (plans before version 4 kept the path as typed: relative to where compile ran, then to the plan).
 */
export function planModelPath(plan: Plan, planFile: string): string {
  const m = plan.model;
  const here = dirname(resolve(planFile));
  const tried = [
    ...(m.sourceFromPlan ? [join(here, m.sourceFromPlan)] : []),
    resolve(m.source),
    ...(isAbsolute(m.source) ? [] : [join(here, m.source)]),
  ];
  const found = tried.find((f) => existsSync(f));
  if (found) return found;
  throw new CleaveError(`${planFile}: its model ${m.source} is not there any more (looked at ${[...new Set(tried)].join(' and ')}); give the model with --weights MODEL.onnx`);
}
