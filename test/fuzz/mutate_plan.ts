// Mutations of compiled plans: field changes on the decoded plan (instructions, ranks, world,
// schedule, buckets, groups, nodes and their attributes, values, stages, boundary tensors, the
// model header, the optimizer) written back with the plan codec, and byte-level damage of the file.
// Every mutation here changes what the file says without making it another valid training job
// (a re-encoded plan carries a new, valid checksum: only mutations no valid plan can hold are
// re-encoded; a constant's bit flip keeps the old checksum, as damage on disk does): a run of it
// must fail cleanly or train exactly as the original does.
import { checkAttrs, getOp } from '../../src/core/ops/index.js';
import { attrsFromJson } from '../../src/core/plan/attrs.js';
import { encodePlan } from '../../src/core/plan/io.js';
import { INSTR_KINDS, type Instruction, type Plan } from '../../src/core/plan/types.js';
import { EDGE_FLOATS, EDGE_INTS, type Rng } from './prng.js';

export interface PlanCase { desc: string; family: string; bytes: Uint8Array }

const clone = <T>(x: T): T => structuredClone(x);

/** Marks a mutation whose file keeps the original checksum line: damage on disk, not a re-signed plan. */
const DAMAGED = ' (the original checksum kept)';

/** Attributes the op accepts (a Gemm's beta of −1): a re-signed plan with them is another valid plan. */
function legalAttrs(op: string, json: string): boolean {
  try {
    checkAttrs(getOp(op, 'fuzz'), attrsFromJson(json), 'fuzz');
    return true;
  } catch {
    return false;
  }
}

/** `mutated` with the checksum line of `original`: what a bit flip on disk leaves. */
function withChecksumOf(original: Uint8Array, mutated: Uint8Array): Uint8Array {
  const line = (b: Uint8Array): [number, number] => { const a = b.indexOf(10); return [a + 1, b.indexOf(10, a + 1) + 1]; };
  const [oa, ob] = line(original), [ma, mb] = line(mutated);
  const out = new Uint8Array(mutated.length - (mb - ma) + (ob - oa));
  out.set(mutated.subarray(0, ma));
  out.set(original.subarray(oa, ob), ma);
  out.set(mutated.subarray(mb), ma + (ob - oa));
  return out;
}
const idx = (r: Rng, n: number): number => r.pick([-1, n, n + 1, 2 ** 31 - 1, -(2 ** 31), r.int(Math.max(1, n)), 0]);

function mutateInstructions(r: Rng, p: Plan): string | undefined {
  const rk = r.pick(p.ranks);
  const ins = rk.instructions;
  if (!ins.length) return undefined;
  const i = r.int(ins.length);
  const x = ins[i]!;
  const at = `rank ${rk.rank} instruction ${i} (${x.kind} stage ${x.stage} mb ${x.mb})`;
  switch (r.int(13)) {
    case 0: ins.splice(i, 1); return `${at}: dropped`;
    case 1: ins.splice(i + 1, 0, clone(x)); return `${at}: duplicated`;
    case 2: { const b = ins.findIndex((y) => y.kind === 'BACKWARD' || y.kind === 'BACKWARD_B'); if (b < 0) return undefined; ins.splice(b + 1, 0, clone(ins[b]!)); return `rank ${rk.rank}: ${ins[b]!.kind} of mb ${ins[b]!.mb} doubled`; }
    case 3: { if (i + 1 >= ins.length) return undefined; [ins[i], ins[i + 1]] = [ins[i + 1]!, ins[i]!]; return `${at}: swapped with the next`; }
    case 4: ins.reverse(); return `rank ${rk.rank}: instructions reversed`;
    case 5: { const k = r.pick(INSTR_KINDS.filter((k) => k !== x.kind)); x.kind = k; return `${at}: kind set to ${k}`; }
    case 6: { const f = r.pick(['stage', 'mb', 'tensor', 'peer', 'bucket', 'group'] as const); const n = { stage: p.stages.length, mb: p.schedule.microbatches, tensor: p.tensors.length, peer: p.world.size, bucket: p.buckets.length, group: p.groups.length }[f]; const v = idx(r, n); (x as unknown as Record<string, number>)[f] = v; return `${at}: ${f} set to ${v}`; }
    case 7: { if (x.kind !== 'SEND' && x.kind !== 'RECV') { const s = ins.findIndex((y) => y.kind === 'SEND' || y.kind === 'RECV'); if (s < 0) return undefined; const y = ins[s]!; y.peer = r.pick([rk.rank, -1, p.world.size, (rk.rank + 1) % p.world.size]); return `rank ${rk.rank} instruction ${s} (${y.kind}): peer set to ${y.peer}`; } x.peer = r.pick([rk.rank, -1, p.world.size]); return `${at}: peer set to ${x.peer}`; }
    case 8: rk.instructions = []; return `rank ${rk.rank}: every instruction removed`;
    case 9: { const o = ins.findIndex((y) => y.kind === 'OPTIMIZER_STEP'); if (o < 0) return undefined; if (r.chance(0.5)) { ins.splice(o, 1); return `rank ${rk.rank}: OPTIMIZER_STEP removed`; } ins.splice(o, 0, clone(ins[o]!)); return `rank ${rk.rank}: OPTIMIZER_STEP doubled`; }
    case 10: { const other = r.pick(p.ranks.filter((q) => q !== rk)); if (!other) return undefined; other.instructions.splice(r.int(other.instructions.length + 1), 0, ins.splice(i, 1)[0]!); return `${at}: moved to rank ${other.rank}`; }
    case 11: { x.mb = r.pick([p.schedule.microbatches, -1, 1e8]); return `${at}: mb set to ${x.mb}`; }
    default: { const y: Instruction = clone(x); y.kind = r.pick(['ALLREDUCE', 'SEND', 'RECV'] as const); y.bucket = 0; y.group = 0; y.tensor = 0; y.peer = (rk.rank + 1) % p.world.size; ins.splice(i, 0, y); return `${at}: an extra ${y.kind} before it`; }
  }
}

function mutateRanks(r: Rng, p: Plan): string | undefined {
  const i = r.int(p.ranks.length);
  const rk = p.ranks[i]!;
  switch (r.int(8)) {
    case 0: p.ranks.splice(i, 1); return `rank ${i} removed from the plan`;
    case 1: p.ranks.push(clone(rk)); return `rank ${i} listed twice`;
    case 2: { rk.rank = r.pick([-1, p.world.size, (i + 1) % p.ranks.length, 4096]); return `rank ${i}: rank field set to ${rk.rank}`; }
    case 3: { const f = r.pick(['ppRank', 'dpRank'] as const); rk[f] = r.pick([-1, 1 - rk[f], 7, 2 ** 31 - 1]); return `rank ${i}: ${f} set to ${rk[f]}`; }
    case 4: { rk.memory.arenaBytes = r.pick([0, -1, 1, 2 ** 40, 2 ** 53, 16]); return `rank ${i}: arena bytes set to ${rk.memory.arenaBytes}`; }
    case 5: { const a = rk.memory.allocations; if (!a.length) return undefined; const k = r.int(a.length); const f = r.pick(['offset', 'bytes'] as const); a[k]![f] = r.pick([-8, 0, rk.memory.arenaBytes, 2 ** 40, a[(k + 1) % a.length]![f]]); return `rank ${i}: allocation ${k} (${a[k]!.what}) ${f} set to ${a[k]![f]}`; }
    case 6: rk.memory.allocations = []; return `rank ${i}: allocations removed`;
    default: [p.ranks[0], p.ranks[p.ranks.length - 1]] = [p.ranks[p.ranks.length - 1]!, p.ranks[0]!]; return 'first and last rank swapped in the list';
  }
}

function mutateWorld(r: Rng, p: Plan): string {
  const w = p.world;
  switch (r.int(6)) {
    case 0: w.size = r.pick([0, 1, 3, 4096, -1, 2 ** 31 - 1]); return `world size set to ${w.size}`;
    case 1: w.pp = r.pick([0, 1, 3, 4096, -1]); return `world pp set to ${w.pp}`;
    case 2: w.dp = r.pick([0, 2, 3, 4096, -1]); return `world dp set to ${w.dp}`;
    case 3: w.virtualStages = r.pick([0, 2, -1, 1000]); return `virtual stages set to ${w.virtualStages}`;
    case 4: w.placement = r.pick(['spread', 'bogus', '']) as Plan['world']['placement']; return `placement set to '${w.placement}'`;
    default: w.size = w.pp = w.dp = 0; return 'world emptied (size, pp, dp 0)';
  }
}

function mutateSchedule(r: Rng, p: Plan): string {
  const s = p.schedule;
  switch (r.int(5)) {
    case 0: s.microbatches = r.pick([0, 1, 3, 1e8, -1, 2 ** 31 - 1]); return `microbatches set to ${s.microbatches}`;
    case 1: s.activeMicrobatches = r.pick([-1, 1, 1e8]); return `active microbatches set to ${s.activeMicrobatches}`;
    case 2: s.name = r.pick(['bogus', '', 'zbv', 'gpipe']); return `schedule name set to '${s.name}'`;
    case 3: s.split = !s.split; return `split (B/W) flag set to ${s.split}`;
    default: s.device = r.pick(['', 'tpu', 'cpu']); return `device set to '${s.device}'`;
  }
}

function mutateCollectives(r: Rng, p: Plan): string | undefined {
  if (r.chance(0.5) && p.buckets.length) {
    const b = r.pick(p.buckets);
    const at = `bucket ${b.id}`;
    switch (r.int(6)) {
      case 0: b.scale = r.pick([-1, 0, 2, NaN, Infinity, 1e30]); return `${at}: scale set to ${b.scale}`;
      case 1: b.params = []; return `${at}: params emptied`;
      case 2: b.params = [...b.params, r.pick([-1, p.values.length, 0, b.params[0] ?? 0])]; return `${at}: param ${b.params.at(-1)} added`;
      case 3: b.bytes = r.pick([0, -1, 1, 2 ** 40]); return `${at}: bytes set to ${b.bytes}`;
      case 4: b.group = r.pick([-1, p.groups.length, 7]); return `${at}: group set to ${b.group}`;
      default: p.buckets.splice(p.buckets.indexOf(b), 1); return `${at}: removed`;
    }
  }
  if (!p.groups.length) return undefined;
  const g = r.pick(p.groups);
  const at = `${g.kind} group ${g.id}`;
  switch (r.int(5)) {
    case 0: g.ranks = []; return `${at}: emptied`;
    case 1: g.ranks = [...g.ranks, r.pick([-1, p.world.size, g.ranks[0] ?? 0, 4096])]; return `${at}: rank ${g.ranks.at(-1)} added`;
    case 2: g.ranks = g.ranks.slice(1); return `${at}: first rank dropped`;
    case 3: g.kind = g.kind === 'dp' ? 'tied' : 'dp'; return `${at}: kind changed to ${g.kind}`;
    default: g.ranks.reverse(); return `${at}: ranks reversed`;
  }
}

function mutateNodes(r: Rng, p: Plan): string | undefined {
  const i = r.int(p.nodes.length);
  const n = p.nodes[i]!;
  const at = `node ${i} '${n.name}' (${n.op})`;
  switch (r.int(10)) {
    case 0: n.attrs = r.pick(['{', '', 'null', '[]', '42', '{"axis":', '{"__proto__":{"x":1}}']); return `${at}: attrs JSON set to '${n.attrs}'`;
    case 1: { let a: Record<string, unknown>; try { a = JSON.parse(n.attrs || '{}') as Record<string, unknown>; } catch { return undefined; } const keys = Object.keys(a); if (!keys.length) { a['bogus'] = 1; } else { const k = r.pick(keys); a[k] = r.pick<unknown>([0, -1, 1e9, 'x', null, [], [-1, -1], { dtype: 'float32', shape: [2 ** 31], data: '' }]); } n.attrs = JSON.stringify(a); return `${at}: attrs set to ${n.attrs.slice(0, 120)}${legalAttrs(n.op, n.attrs) ? DAMAGED : ''}`; }
    case 2: n.op = r.pick(['NoSuchOp', '', 'Relu', 'MatMul', 'Softmax', 'Add']); return `${at}: op set to '${n.op}'`;
    case 3: { if (!n.inputs.length) return undefined; const k = r.int(n.inputs.length); n.inputs[k] = idx(r, p.values.length); return `${at}: input ${k} set to value ${n.inputs[k]}`; }
    case 4: { if (!n.outputs.length) return undefined; const k = r.int(n.outputs.length); n.outputs[k] = r.pick([-1, p.values.length, n.inputs[0] ?? 0, 0]); return `${at}: output ${k} set to value ${n.outputs[k]}`; }
    case 5: n.inputs = []; return `${at}: inputs removed`;
    case 6: n.stage = r.pick([-1, p.stages.length, 1 - n.stage, 99]); return `${at}: stage set to ${n.stage}`;
    case 7: n.phase = r.pick(['', 'bogus', 'backward', 'forward']); return `${at}: phase set to '${n.phase}'`;
    case 8: p.nodes.splice(i, 1); return `${at}: removed (later node indices shift)`;
    default: p.nodes.push(clone(n)); return `${at}: appended again`;
  }
}

function mutateValues(r: Rng, p: Plan): string | undefined {
  const i = r.int(p.values.length);
  const v = p.values[i]!;
  const at = `value ${i} '${v.name}' (${v.kind}, [${v.shape}])`;
  switch (r.int(9)) {
    case 0: { if (!v.shape.length) { v.shape = [2]; return `${at}: shape set to [2]`; } const k = r.int(v.shape.length); v.shape[k] = r.pick([0, -1, v.shape[k]! * 2, v.shape[k]! + 1, 2 ** 31, 2 ** 40]); return `${at}: dim ${k} set to ${v.shape[k]}`; }
    case 1: v.shape = [...v.shape, r.pick([1, 2])]; return `${at}: a dim added`;
    case 2: v.shape = []; return `${at}: made a scalar`;
    case 3: v.dtype = r.pick([0, 6, 7, 10, 11, 16, 99, -1]); return `${at}: dtype set to ${v.dtype}`;
    case 4: v.kind = r.pick(['input', 'param', 'state', 'const', 'node', 'bogus'] as const).toString() as typeof v.kind; return `${at}: kind set to '${v.kind}'`;
    case 5: { const c = p.values.findIndex((x) => x.data?.length); if (c < 0) return undefined; const x = p.values[c]!; x.data = x.data!.subarray(0, r.int(x.data!.length)); return `value ${c} '${x.name}': constant data truncated to ${x.data.length} bytes`; }
    // A flipped bit in a constant (or an attribute set to another legal value) can leave a valid
    // plan of another model: it is damage only when the file still carries the checksum of what it
    // was (DAMAGED), which must then refuse it.
    case 7: { const cs = p.values.map((x, k) => [x, k] as const).filter(([x]) => x.data?.length); if (!cs.length) return undefined; const [x, k] = r.pick(cs); const b = new Uint8Array(x.data!); const at = r.int(b.length); b[at]! ^= 1 << r.int(8); x.data = b; return `value ${k} '${x.name}': one bit of its constant data flipped (byte ${at})${DAMAGED}`; }
    case 6: { const c = p.values.findIndex((x) => x.kind === 'param'); if (c < 0) return undefined; p.values[c]!.name = r.pick(['', 'no_such_param', p.values[(c + 1) % p.values.length]!.name]); return `param value ${c}: renamed to '${p.values[c]!.name}'`; }
    default: p.values.splice(i, 1); return `${at}: removed (later value indices shift)`;
  }
}

function mutateStages(r: Rng, p: Plan): string | undefined {
  const s = r.pick(p.stages);
  const at = `stage ${s.index}`;
  switch (r.int(9)) {
    case 0: s.forward = []; return `${at}: forward program emptied`;
    case 1: s.forward.reverse(); return `${at}: forward program reversed`;
    case 2: s.params = []; return `${at}: params emptied`;
    case 3: { const w = r.pick(['forward', 'backwardB', 'backwardW'] as const); const ws = s.workspaces[w]; if (!ws.slots.length) { ws.bytes = r.pick([-1, 2 ** 40]); return `${at}: ${w} workspace bytes set to ${ws.bytes}`; } const k = r.int(ws.slots.length); const f = r.pick(['offset', 'bytes'] as const); ws.slots[k]![f] = r.pick([-4, 0, ws.bytes, 2 ** 40, 1]); return `${at}: ${w} workspace slot ${k} ${f} set to ${ws.slots[k]![f]}`; }
    case 4: { const w = r.pick(['forward', 'backwardB', 'backwardW'] as const); s.workspaces[w].bytes = r.pick([0, 1, -1]); return `${at}: ${w} workspace bytes set to ${s.workspaces[w].bytes}`; }
    case 5: { if (!s.grads.length) return undefined; const g = r.pick(s.grads); const f = r.pick(['param', 'value'] as const); g[f] = idx(r, p.values.length); return `${at}: a gradient pair's ${f} set to ${g[f]}`; }
    case 6: s.grads = []; return `${at}: gradient contributions removed`;
    case 7: s.ppRank = r.pick([-1, 1 - s.ppRank, 99]); return `${at}: ppRank set to ${s.ppRank}`;
    default: { s.backwardB = [...s.backwardB, ...s.backwardB.slice(0, 1)]; return `${at}: first backward node listed twice`; }
  }
}

function mutateTensors(r: Rng, p: Plan): string | undefined {
  if (!p.tensors.length) return undefined;
  const t = r.pick(p.tensors);
  const at = `boundary tensor ${t.id}`;
  switch (r.int(6)) {
    case 0: t.value = idx(r, p.values.length); return `${at}: value set to ${t.value}`;
    case 1: t.fromStage = r.pick([-1, t.toStage, 99]); return `${at}: fromStage set to ${t.fromStage}`;
    case 2: t.toStage = r.pick([-1, t.fromStage, 99]); return `${at}: toStage set to ${t.toStage}`;
    case 3: t.bytes = r.pick([0, -1, t.bytes * 2, t.bytes - 4, 2 ** 40]); return `${at}: bytes set to ${t.bytes}`;
    case 4: t.direction = t.direction === 'activation' ? 'gradient' : 'activation'; return `${at}: direction flipped to ${t.direction}`;
    default: t.id = r.pick([-1, p.tensors.length, 99, (t.id + 1) % p.tensors.length]); return `${at}: id set to ${t.id}`;
  }
}

function mutateHeader(r: Rng, p: Plan, others: readonly string[]): string {
  const m = p.model, o = m.optimizerConfig;
  switch (r.int(12)) {
    case 0: { const f = r.pick(['lossValue', 'labelsValue', 'lossSeedValue'] as const); m[f] = idx(r, p.values.length); return `model ${f} set to ${m[f]}`; }
    case 1: m.classes = r.pick([0, -1, 1, 2 ** 31 - 1, m.classes + 1]); return `model classes set to ${m.classes}`;
    case 2: m.microbatchSize = r.pick([0, -1, 2, 1e8]); return `microbatch size set to ${m.microbatchSize}`;
    case 3: { m.source = r.pick(['/nonexistent/model.onnx', ...others]); m.sourceFromPlan = ''; return `model source set to ${m.source}`; }
    case 4: { const f = r.pick(['lr', 'weightDecay', 'eps', 'beta1', 'beta2', 'momentum', 'clip'] as const); o[f] = r.pick([NaN, -1, Infinity, -Infinity, f.startsWith('beta') ? 1 : -0.5, f.startsWith('beta') ? 2 : -1e9]); return `optimizer ${f} set to ${o[f]} (out of range)`; }
    case 5: o.kind = r.pick(['bogus', '', 'lamb']) as typeof o.kind; return `optimizer kind set to '${o.kind}'`;
    case 6: m.dtypePolicy = r.pick(['fp8', '', 'int4']); return `dtype policy set to '${m.dtypePolicy}'`;
    case 7: m.loss = r.pick(['{', '', '{"kind":"bogus"}', '{"kind":"cross-entropy","output":"nope"}', 'null']); return `loss set to '${m.loss}'`;
    case 8: p.version = r.pick([0, -1, 5, 999, 2]); return `plan version set to ${p.version}`;
    case 9: m.optimizer = r.pick(['sgd', 'bogus', '']); return `optimizer family (memory plan) set to '${m.optimizer}'`;
    // Only values no optimizer can train with (a huge but finite eps is a legal, if odd, setting).
    case 10: { const f = r.pick(['lr', 'eps'] as const); o[f] = r.pick(EDGE_FLOATS.filter((x) => Number.isNaN(x) || x < 0 || !Number.isFinite(x))); return `optimizer ${f} set to ${o[f]} (out of range)`; }
    default: m.opset = r.pick([0, -1, 99]); return `model opset set to ${m.opset}`;
  }
}

function byteDamage(r: Rng, b0: Uint8Array): { bytes: Uint8Array; desc: string } {
  const b = new Uint8Array(b0);
  switch (r.int(5)) {
    case 0: { const k = r.range(1, 6); const at: number[] = []; for (let i = 0; i < k; i++) { const p = r.range(11, b.length - 1); b[p]! ^= 1 << r.int(8); at.push(p); } return { bytes: b, desc: `${k} bit flip(s) at byte(s) ${at.join(', ')}` }; }
    case 1: { const n = r.int(b.length); return { bytes: b.subarray(0, n), desc: `truncated to ${n} of ${b.length} bytes` }; }
    case 2: { const p = r.int(11); b[p]! ^= 0x20; return { bytes: b, desc: `magic byte ${p} changed` }; }
    case 3: { const p = r.range(11, b.length - 1), n = r.range(1, 32); for (let i = p; i < Math.min(b.length, p + n); i++) b[i] = r.int(256); return { bytes: b, desc: `${n} random bytes at ${p}` }; }
    default: { const n = r.range(1, 64); const out = new Uint8Array(b.length + n); out.set(b); for (let i = b.length; i < out.length; i++) out[i] = r.int(256); return { bytes: out, desc: `${n} random bytes appended` }; }
  }
}

type PlanMutator = (r: Rng, p: Plan, others: readonly string[]) => string | undefined;
const FAMILIES: readonly (readonly [number, string, PlanMutator])[] = [
  [22, 'instructions', mutateInstructions],
  [8, 'ranks', mutateRanks],
  [6, 'world', mutateWorld],
  [6, 'schedule', mutateSchedule],
  [8, 'collectives', mutateCollectives],
  [10, 'nodes', mutateNodes],
  [8, 'values', mutateValues],
  [8, 'stages', mutateStages],
  [5, 'tensors', mutateTensors],
  [10, 'header', mutateHeader],
];

/** A mutated copy of `plan` (encoded), or its bytes damaged. `others`: other models' paths (a plan pointed at another model). */
export function mutatePlan(r: Rng, plan: Plan, bytes: Uint8Array, others: readonly string[]): PlanCase {
  if (r.chance(0.15)) { const d = byteDamage(r, bytes); return { desc: d.desc, family: 'bytes', bytes: d.bytes }; }
  for (;;) {
    const p = clone(plan);
    const [, family, f] = r.weighted(FAMILIES.map((x) => [x[0], x] as const));
    let desc: string | undefined;
    try {
      desc = f(r, p, others);
    } catch {
      desc = undefined;
    }
    if (!desc) continue;
    if (r.chance(0.15)) {
      const [, , g] = r.weighted(FAMILIES.map((x) => [x[0], x] as const));
      try { const d2 = g(r, p, others); if (d2) desc += `; ${d2}`; } catch { /* not applicable */ }
    }
    try {
      const out = encodePlan(p);
      return { desc, family, bytes: desc.includes(DAMAGED) ? withChecksumOf(bytes, out) : out };
    } catch (e) {
      return { desc: `${desc} (the codec refused to encode it: ${(e as Error).message}; unchanged plan)`, family, bytes };
    }
  }
}
