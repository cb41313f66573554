// The static checks a plan passes before any rank runs a step of it: what compile proved when it
// wrote the plan, proved again on what was read, so that a damaged or hand-made plan is refused
// naming its first inconsistency instead of training wrong, spinning or allocating without bound.
import { CleaveError, visible } from '../errors.js';
import { ALL_DTYPES, dtypeBytes, dtypeFromOnnx, dtypeToOnnx } from '../ir/dtype.js';
import type { Attrs, ValueType } from '../ir/graph.js';
import { type Tensor, tensorFromBytes } from '../ir/tensor.js';
import { checkAttrs, getOp } from '../ops/registry.js';
import { attrsFromJson } from './attrs.js';
import { OPTIMIZER_FAMILIES, OPTIMIZER_RULES } from './optimizer.js';
import { PROGRAMS, type StageProgram, instructionLabel as label } from './programs.js';
import { simulate } from './simulate.js';
import { INSTR_KINDS, type Instruction, type Plan } from './types.js';

/**
 * Bounds on what a plan may ask for, checked before anything is allocated from its numbers. They
 * sit far above any real run (a 65,536-GPU world, a million microbatches a step, 64 GiB per value
 * per microbatch, 4 TiB of arena per rank) and far below what turns a typo into gigabytes.
 */
export const PLAN_LIMITS = {
  ranks: 65_536,
  microbatches: 1 << 20,
  microbatchSize: 1 << 24,
  valueBytes: 2 ** 36,
  arenaBytes: 2 ** 42,
} as const;

const KNOWN_ONNX_TYPES = new Set(ALL_DTYPES.map(dtypeToOnnx));


const isIndex = (x: unknown, n: number): x is number => Number.isInteger(x) && (x as number) >= 0 && (x as number) < n;
const isCount = (x: unknown, max: number): x is number => Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) <= max;

/**
 * Checks everything a runtime relies on in `plan` and throws a CleaveError naming the first
 * inconsistency (`file: the plan is inconsistent: …`): the world and its ranks, every index and
 * size against its table and bounds, each program's nodes (op known, attributes valid, output
 * shapes what the op makes of its inputs), boundary tensors and buckets against the programs,
 * every rank's instruction list complete (each forward and backward of each microbatch once, each
 * bucket reduced once after its gradients are final, one optimizer step last), and then the
 * simulator over all ranks together (every send meets its receive, collectives agree, nothing
 * deadlocks). Cheap next to a step: run it before starting ranks.
 */
export function checkPlan(plan: Plan, file: string): void {
  const fail = (what: string): never => {
    throw new CleaveError(`${file}: the plan is inconsistent: ${visible(what)}; recompile it with cleave compile`);
  };
  checkWorld(plan, fail);
  checkModel(plan, fail);
  checkValues(plan, fail);
  checkStages(plan, fail);
  checkNodes(plan, fail);
  checkUses(plan, fail);
  checkPlaces(plan, fail);
  checkCommunication(plan, fail);
  checkRanks(plan, fail);
  try {
    simulate({
      ranks: plan.ranks.map((r) => r.instructions),
      groups: plan.groups, buckets: plan.buckets,
      tensors: plan.tensors,
      stageRank: (s) => plan.stages[s]!.ppRank, ppRankOf: (w) => plan.ranks[w]!.ppRank,
      readers: (id) => {
        const t = plan.tensors[id]!;
        const s = plan.stages[t.toStage]!;
        const reads = (k: StageProgram): boolean => s[k].some((n) => plan.nodes[n]!.inputs.includes(t.value));
        return [...(reads('forward') ? ['FORWARD' as const] : []), ...(reads('backwardB') ? ['BACKWARD_B' as const] : []), ...(reads('backwardW') ? ['BACKWARD_W' as const] : [])];
      },
      computeMs: () => 1, transferMs: () => 0, allreduceMs: () => 0,
    });
  } catch (e) {
    if (e instanceof CleaveError) throw new CleaveError(`${file}: ${e.message}; recompile it with cleave compile`);
    throw e;
  }
}

type Fail = (what: string) => never;

/** A value's bytes per microbatch, from its shape and element type. */
const valueBytes = (v: Plan['values'][number]): number => v.shape.reduce((a, d) => a * d, 1) * dtypeBytes(dtypeFromOnnx(v.dtype, v.name));

/** Names from a damaged plan may hold control characters: shown escaped, the message stays one line. */

const LOSS_KINDS = ['output', 'cross-entropy', 'mse'];

/** What the run trains with: the optimizer's kind and hyperparameters in range, the loss it reads. */
function checkModel(plan: Plan, fail: Fail): void {
  const m = plan.model;
  if (!(OPTIMIZER_FAMILIES as readonly string[]).includes(m.optimizer)) fail(`its optimizer family is '${m.optimizer}'`);
  const o = m.optimizerConfig;
  if (!['sgd', 'adam', 'adamw'].includes(o.kind)) fail(`its optimizer is '${o.kind}'`);
  for (const [k, r] of Object.entries(OPTIMIZER_RULES) as [keyof typeof OPTIMIZER_RULES, (typeof OPTIMIZER_RULES)[keyof typeof OPTIMIZER_RULES]][]) {
    if (!(Number.isFinite(o[k]) && r.ok(o[k]))) fail(`its optimizer's ${k} is ${o[k]}; it must be ${r.rule}`);
  }
  if (o.kind !== 'sgd' && o.momentum !== 0) fail(`its ${o.kind} optimizer has momentum ${o.momentum}`);
  let loss: unknown;
  try {
    loss = JSON.parse(m.loss);
  } catch {
    return fail('its loss is not readable');
  }
  const kind = loss && typeof loss === 'object' ? (loss as { kind?: unknown }).kind : undefined;
  if (typeof kind !== 'string' || !LOSS_KINDS.includes(kind)) fail(`its loss is ${visible(m.loss)}, not one of ${LOSS_KINDS.join(', ')}`);
  if (kind === 'output' ? m.labelsValue !== -1 : m.labelsValue === -1) fail(`its ${kind} loss ${kind === 'output' ? 'reads labels' : 'has no labels input'}`);
  if (!isCount(m.classes, PLAN_LIMITS.valueBytes)) fail(`its loss reads ${m.classes} classes`);
  if (kind === 'cross-entropy') {
    // The classes are the logits' last dim: what the data draws labels from.
    const output = (loss as { output?: unknown }).output;
    const logits = plan.values.find((v) => v.name === output && v.kind === 'node');
    if (typeof output === 'string' && logits && logits.shape.at(-1) !== m.classes) fail(`its cross-entropy loss reads ${m.classes} classes of '${output}', whose last dim is ${logits.shape.at(-1)}`);
    if (m.classes < 1) fail(`its cross-entropy loss reads ${m.classes} classes`);
  } else if (m.classes !== 0) fail(`its ${kind} loss has ${m.classes} classes`);
}

function checkWorld(plan: Plan, fail: Fail): void {
  const w = plan.world;
  if (!isCount(w.pp, PLAN_LIMITS.ranks) || w.pp < 1) fail(`its pipeline degree is ${w.pp}`);
  if (!isCount(w.dp, PLAN_LIMITS.ranks) || w.dp < 1) fail(`its data-parallel degree is ${w.dp}`);
  if (w.size !== w.pp * w.dp) fail(`its world has ${w.size} ranks, not pp ${w.pp} × dp ${w.dp}`);
  if (w.size > PLAN_LIMITS.ranks) fail(`its world of ${w.size} ranks is past the bound of ${PLAN_LIMITS.ranks}`);
  if (plan.ranks.length !== w.size) fail(`its world has ${w.size} ranks but it lists ${plan.ranks.length}`);
  const m = plan.schedule.microbatches;
  if (!isCount(m, PLAN_LIMITS.microbatches) || m < 1) fail(`${m} microbatches a step (1 to ${PLAN_LIMITS.microbatches})`);
  const b = plan.model.microbatchSize;
  if (!isCount(b, PLAN_LIMITS.microbatchSize) || b < 1) fail(`a microbatch of ${b} samples (1 to ${PLAN_LIMITS.microbatchSize})`);
  if (!isCount(w.virtualStages, PLAN_LIMITS.ranks) || w.virtualStages < 1) fail(`${w.virtualStages} virtual stages per rank`);
}

function checkValues(plan: Plan, fail: Fail): void {
  const kinds = new Set(['input', 'param', 'state', 'const', 'node']);
  plan.values.forEach((v, i) => {
    const what = `value ${i} ('${v.name}')`;
    if (!kinds.has(v.kind)) fail(`${what} is of kind '${v.kind}'`);
    if (!KNOWN_ONNX_TYPES.has(v.dtype)) fail(`${what} has element type code ${v.dtype}`);
    if (!v.shape.every((d) => isCount(d, Number.MAX_SAFE_INTEGER))) fail(`${what} has shape [${v.shape.join(', ')}]`);
    const bytes = valueBytes(v);
    if (!(bytes <= PLAN_LIMITS.valueBytes)) fail(`${what} of shape [${v.shape.join(', ')}] takes ${bytes} bytes, past the bound of ${PLAN_LIMITS.valueBytes}`);
    if (v.kind === 'const' && (v.data?.length ?? 0) !== bytes) fail(`${what} holds ${v.data?.length ?? 0} bytes of data for ${bytes} by its shape`);
    // Every sample a step draws is a row of each input: its first dim is the microbatch.
    if (v.kind === 'input' && v.shape[0] !== plan.model.microbatchSize) fail(`${what} is an input of shape [${v.shape.join(', ')}]; its first dim must be the microbatch size, ${plan.model.microbatchSize}`);
    if (v.kind !== 'const' && v.data) fail(`${what} is a ${v.kind} and holds constant data`);
  });
  const m = plan.model;
  const n = plan.values.length;
  if (!isIndex(m.lossValue, n) || plan.values[m.lossValue]!.kind !== 'node') fail(`its loss is value ${m.lossValue}, not a value a node computes`);
  if (m.labelsValue !== -1 && (!isIndex(m.labelsValue, n) || plan.values[m.labelsValue]!.kind !== 'input')) fail(`its labels are value ${m.labelsValue}, not an input`);
  if (m.lossSeedValue !== -1 && (!isIndex(m.lossSeedValue, n) || plan.values[m.lossSeedValue]!.kind !== 'const')) fail(`its backward seed is value ${m.lossSeedValue}, not a constant`);
  if (m.lossSeedValue !== -1) {
    // dLoss/dLoss: one, whatever loss scaling later makes of it.
    const seed = plan.values[m.lossSeedValue]!;
    const t = tensorFromBytes(dtypeFromOnnx(seed.dtype, seed.name), seed.shape, seed.data ?? new Uint8Array(0), seed.name);
    if (t.data.length !== 1 || Number(t.data[0]) !== 1) fail(`its backward seed '${seed.name}' is not the scalar 1`);
  }
}

function checkStages(plan: Plan, fail: Fail): void {
  const { pp, virtualStages } = plan.world;
  if (plan.stages.length !== pp * virtualStages) fail(`it has ${plan.stages.length} stages for pp ${pp} × ${virtualStages} virtual stages`);
  const owner = new Map<number, string>();
  const ranksWithStages = new Set<number>();
  plan.stages.forEach((s, i) => {
    if (s.index !== i) fail(`stage ${i} calls itself stage ${s.index}`);
    if (!isIndex(s.ppRank, pp)) fail(`stage ${i} is on pipeline rank ${s.ppRank} of ${pp}`);
    ranksWithStages.add(s.ppRank);
    for (const k of ['forward', 'backwardB', 'backwardW'] as const) {
      for (const n of s[k]) {
        if (!isIndex(n, plan.nodes.length)) fail(`stage ${i}'s ${k} program lists node ${n} of ${plan.nodes.length}`);
        const prev = owner.get(n);
        if (prev) fail(`node ${n} ('${plan.nodes[n]!.name}') is in both ${prev} and stage ${i}'s ${k} program`);
        owner.set(n, `stage ${i}'s ${k} program`);
        if (plan.nodes[n]!.stage !== i) fail(`node ${n} ('${plan.nodes[n]!.name}') says stage ${plan.nodes[n]!.stage} but stage ${i}'s ${k} program lists it`);
      }
      const ws = s.workspaces[k];
      if (!isCount(ws.bytes, PLAN_LIMITS.arenaBytes)) fail(`stage ${i}'s ${k} workspace of ${ws.bytes} bytes`);
      for (const slot of ws.slots) {
        if (!isIndex(slot.value, plan.values.length) || !isCount(slot.offset, ws.bytes) || !isCount(slot.bytes, ws.bytes) || slot.offset + slot.bytes > ws.bytes) {
          fail(`stage ${i}'s ${k} workspace places value ${slot.value} at ${slot.offset} (${slot.bytes} bytes) in ${ws.bytes} bytes`);
        }
      }
    }
    for (const v of s.params) if (!isIndex(v, plan.values.length) || plan.values[v]!.kind !== 'param') fail(`stage ${i} reads parameter ${v}, which is not a parameter`);
    for (const g of s.grads) {
      if (!isIndex(g.param, plan.values.length) || plan.values[g.param]!.kind !== 'param') fail(`stage ${i} has a gradient for value ${g.param}, which is not a parameter`);
      if (!isIndex(g.value, plan.values.length) || plan.values[g.value]!.shape.join() !== plan.values[g.param]!.shape.join()) {
        fail(`stage ${i}'s gradient of '${plan.values[g.param]!.name}' is value ${g.value}, not one of its shape`);
      }
    }
    for (const st of s.states) {
      if (!isIndex(st.state, plan.values.length) || plan.values[st.state]!.kind !== 'state') fail(`stage ${i} updates value ${st.state}, which is not a state`);
      if (!isIndex(st.value, plan.values.length) || plan.values[st.value]!.shape.join() !== plan.values[st.state]!.shape.join()) {
        fail(`stage ${i}'s update of '${plan.values[st.state]!.name}' is value ${st.value}, not one of its shape`);
      }
    }
  });
  for (let r = 0; r < pp; r++) if (!ranksWithStages.has(r)) fail(`pipeline rank ${r} has no stage`);
}

/** Each node as a runtime will run it: op known, attributes valid, outputs what the op makes of its inputs. */
function checkNodes(plan: Plan, fail: Fail): void {
  const produced = new Set<number>();
  const types = (v: number): ValueType => {
    const pv = plan.values[v]!;
    return { dtype: dtypeFromOnnx(pv.dtype, pv.name), shape: pv.shape };
  };
  const constOf = (v: number): Tensor | undefined => {
    const pv = plan.values[v]!;
    return pv.kind === 'const' && pv.data ? tensorFromBytes(dtypeFromOnnx(pv.dtype, pv.name), pv.shape, pv.data, pv.name) : undefined;
  };
  plan.nodes.forEach((n, i) => {
    const what = `node ${i} ('${n.name}', ${n.op})`;
    const def = (() => {
      try {
        return getOp(n.op, what);
      } catch {
        return fail(`${what}: op ${n.op} is not one cleave runs`);
      }
    })();
    for (const v of n.inputs) if (v !== -1 && !isIndex(v, plan.values.length)) fail(`${what} reads value ${v} of ${plan.values.length}`);
    for (const v of n.outputs) {
      if (!isIndex(v, plan.values.length)) fail(`${what} writes value ${v} of ${plan.values.length}`);
      if (plan.values[v]!.kind !== 'node') fail(`${what} writes '${plan.values[v]!.name}', a ${plan.values[v]!.kind}`);
      if (produced.has(v)) fail(`${what} writes '${plan.values[v]!.name}', which another node writes too`);
      produced.add(v);
    }
    const [lo, hi] = def.arity;
    // Trailing absent optional inputs may be dropped or kept as -1.
    const given = n.inputs.length - [...n.inputs].reverse().findIndex((v) => v !== -1);
    const count = n.inputs.every((v) => v === -1) ? 0 : given;
    if (count < lo || count > hi) fail(`${what} has ${count} inputs; ${n.op} takes ${lo === hi ? lo : `${lo} to ${hi}`}`);
    const missing = n.inputs.slice(0, lo).indexOf(-1);
    if (missing >= 0) fail(`${what} lacks its input ${missing}, which ${n.op} needs`);
    let attrs: Attrs;
    try {
      attrs = attrsFromJson(n.attrs);
    } catch (e) {
      return fail(`${what}: its attributes are not readable (${e instanceof CleaveError ? e.message : 'not JSON'})`);
    }
    try {
      checkAttrs(def, attrs, what);
    } catch (e) {
      if (e instanceof CleaveError) fail(e.message);
      throw e;
    }
    let out: ValueType[];
    try {
      out = def.infer({ node: n.name, inputs: n.inputs.map((v) => (v === -1 ? null : types(v))), numOutputs: n.outputs.length, attrs, consts: n.inputs.map((v) => (v === -1 ? undefined : constOf(v))) });
    } catch (e) {
      if (e instanceof CleaveError) return fail(`${what}: ${e.message}`);
      return fail(`${what}: its inputs and attributes do not make a valid ${n.op}`);
    }
    n.outputs.forEach((v, k) => {
      const want = out[k];
      const pv = plan.values[v]!;
      if (!want) return;
      if (want.shape.length !== pv.shape.length || want.shape.some((d, j) => typeof d === 'number' && d !== pv.shape[j])) {
        fail(`${what} makes output ${k} of shape [${want.shape.join(', ')}] but the plan has '${pv.name}' as [${pv.shape.join(', ')}]`);
      }
      if (dtypeToOnnx(want.dtype) !== pv.dtype) fail(`${what} makes output ${k} of type ${want.dtype} but the plan has '${pv.name}' as ${dtypeFromOnnx(pv.dtype, pv.name)}`);
    });
  });
}

/**
 * No node's work goes nowhere: each has an output some node, boundary tensor, gradient or state
 * update, or the loss reads. A gradient list emptied or a reader dropped leaves such a node (its
 * parameters would silently never train).
 */
function checkUses(plan: Plan, fail: Fail): void {
  const used = new Set<number>([plan.model.lossValue]);
  for (const n of plan.nodes) for (const v of n.inputs) used.add(v);
  for (const t of plan.tensors) used.add(t.value);
  for (const s of plan.stages) {
    for (const g of s.grads) used.add(g.value);
    for (const st of s.states) used.add(st.value);
  }
  plan.nodes.forEach((n, i) => {
    if (n.outputs.length && !n.outputs.some((v) => used.has(v))) fail(`node ${i} ('${n.name}', ${n.op}) computes ${n.outputs.map((v) => `'${plan.values[v]!.name}'`).join(', ')}, which nothing reads (not a node, a boundary tensor, a gradient, a state update or the loss)`);
  });
}

function checkCommunication(plan: Plan, fail: Fail): void {
  const { dp, size } = plan.world;
  const S = plan.stages.length;
  plan.tensors.forEach((t, i) => {
    if (t.id !== i) fail(`boundary tensor ${i} calls itself ${t.id}`);
    if (!isIndex(t.value, plan.values.length)) fail(`boundary tensor ${i} carries value ${t.value} of ${plan.values.length}`);
    if (!isIndex(t.fromStage, S) || !isIndex(t.toStage, S) || t.fromStage === t.toStage) fail(`boundary tensor ${i} goes from stage ${t.fromStage} to stage ${t.toStage}`);
    if (t.direction !== 'activation' && t.direction !== 'gradient') fail(`boundary tensor ${i} is of direction '${t.direction}'`);
    const pv = plan.values[t.value]!;
    const bytes = valueBytes(pv);
    if (t.bytes !== bytes) fail(`boundary tensor ${i} ('${pv.name}') is ${t.bytes} bytes; its value is ${bytes}`);
  });
  plan.groups.forEach((g, i) => {
    if (g.id !== i) fail(`group ${i} calls itself ${g.id}`);
    if (g.kind !== 'dp' && g.kind !== 'tied') fail(`group ${i} is of kind '${g.kind}'`);
    if (g.ranks.length < 2) fail(`group ${i} (${g.kind}) has ${g.ranks.length === 0 ? 'no ranks' : 'one rank'}`);
    if (!g.ranks.every((r, k) => isIndex(r, size) && (k === 0 || r > g.ranks[k - 1]!))) fail(`group ${i} lists ranks ${g.ranks.join(', ')}`);
  });
  // Every parameter whose gradient has several holders (replicas, or pipeline ranks sharing it) is
  // reduced by exactly one bucket, over exactly its holders, averaged over the replicas.
  const holders = new Map<number, Set<number>>();
  for (const s of plan.stages) for (const g of s.grads) {
    const set = holders.get(g.param) ?? new Set<number>();
    for (const r of plan.ranks) if (r.ppRank === s.ppRank) set.add(r.rank);
    holders.set(g.param, set);
  }
  const bucketOf = new Map<number, number>();
  plan.buckets.forEach((b, i) => {
    if (b.id !== i) fail(`bucket ${i} calls itself ${b.id}`);
    if (!isIndex(b.group, plan.groups.length)) fail(`bucket ${i} is reduced over group ${b.group} of ${plan.groups.length}`);
    if (!(Math.abs(b.scale * dp - 1) < 1e-9)) fail(`bucket ${i} scales its sum by ${b.scale}; averaging over ${dp} replica${dp === 1 ? '' : 's'} is ${1 / dp}`);
    if (!isIndex(b.stage, S)) fail(`bucket ${i} belongs to stage ${b.stage} of ${S}`);
    if (!b.params.length) fail(`bucket ${i} reduces no parameter`);
    let bytes = 0;
    for (const p of b.params) {
      if (!holders.has(p)) fail(`bucket ${i} reduces value ${p}, which no stage has a gradient for`);
      if (bucketOf.has(p)) fail(`parameter '${plan.values[p]!.name}' is in buckets ${bucketOf.get(p)} and ${i}`);
      bucketOf.set(p, i);
      const want = [...holders.get(p)!].sort((a, c) => a - c).join();
      if (plan.groups[b.group]!.ranks.join() !== want) fail(`bucket ${i} reduces '${plan.values[p]!.name}' over ranks ${plan.groups[b.group]!.ranks.join(', ')}; its gradient is on ranks ${want.replace(/,/g, ', ')}`);
      const pv = plan.values[p]!;
      bytes += valueBytes(pv);
    }
    if (b.bytes !== bytes) fail(`bucket ${i} says ${b.bytes} bytes; its parameters take ${bytes}`);
  });
  for (const [p, set] of holders) if (set.size > 1 && !bucketOf.has(p)) fail(`parameter '${plan.values[p]!.name}' has gradients on ranks ${[...set].join(', ')} and no bucket reduces them`);
}

/** Each rank's number and place in the world: one rank per (pipeline rank, replica). */
function checkPlaces(plan: Plan, fail: Fail): void {
  const { pp, dp } = plan.world;
  const seen = new Set<string>();
  for (const [w, r] of plan.ranks.entries()) {
    if (r.rank !== w) fail(`rank ${w} calls itself rank ${r.rank}`);
    if (!isIndex(r.ppRank, pp) || !isIndex(r.dpRank, dp)) fail(`rank ${w} sits at pipeline rank ${r.ppRank} of ${pp}, replica ${r.dpRank} of ${dp}`);
    const place = `${r.ppRank}:${r.dpRank}`;
    if (seen.has(place)) fail(`rank ${w} sits at pipeline rank ${r.ppRank}, replica ${r.dpRank}, as another rank does`);
    seen.add(place);
  }
}

function checkRanks(plan: Plan, fail: Fail): void {
  const { size } = plan.world;
  const m = plan.schedule.microbatches;
  for (const [w, r] of plan.ranks.entries()) {
    const who = `rank ${w}`;
    const mem = r.memory;
    if (!isCount(mem.arenaBytes, PLAN_LIMITS.arenaBytes)) fail(`${who}'s arena of ${mem.arenaBytes} bytes (bound ${PLAN_LIMITS.arenaBytes})`);
    for (const a of mem.allocations) {
      if (!isCount(a.offset, mem.arenaBytes) || !isCount(a.bytes, mem.arenaBytes) || a.offset + a.bytes > mem.arenaBytes) fail(`${who}'s buffer '${a.what}' at ${a.offset} (${a.bytes} bytes) lies outside its arena of ${mem.arenaBytes} bytes`);
    }
    const stages = plan.stages.filter((s) => s.ppRank === r.ppRank).map((s) => s.index);
    const done = new Map<string, number>();
    let optimizer = -1;
    const reduced = new Map<number, number>();
    r.instructions.forEach((ins, i) => {
      const at = `${who} instruction ${i}`;
      if (!INSTR_KINDS.includes(ins.kind)) fail(`${at} is of an unknown kind`);
      const says = `${at} (${label(ins)})`;
      if (optimizer >= 0 && ins.kind !== 'SEND' && ins.kind !== 'RECV') fail(`${says} comes after the optimizer step`);
      if (PROGRAMS[ins.kind]) {
        if (!stages.includes(ins.stage)) fail(`${says} runs a stage that is not on its pipeline rank`);
        if (!isIndex(ins.mb, m)) fail(`${says} runs microbatch ${ins.mb} of ${m}`);
        const keys = ins.kind === 'BACKWARD' ? ['B', 'W'] : [ins.kind === 'FORWARD' ? 'F' : ins.kind === 'BACKWARD_B' ? 'B' : 'W'];
        for (const k of keys) {
          const key = `${k}:${ins.stage}:${ins.mb}`;
          if (done.has(key)) fail(`${says} repeats work instruction ${done.get(key)} did`);
          done.set(key, i);
        }
      } else if (ins.kind === 'SEND' || ins.kind === 'RECV') {
        if (!isIndex(ins.tensor, plan.tensors.length)) fail(`${says} moves boundary tensor ${ins.tensor} of ${plan.tensors.length}`);
        if (!isIndex(ins.mb, m)) fail(`${says} moves microbatch ${ins.mb} of ${m}`);
        if (!isIndex(ins.peer, size) || ins.peer === w) fail(`${says} has rank ${ins.peer} at its other end`);
        const t = plan.tensors[ins.tensor]!;
        const [mine, theirs] = ins.kind === 'SEND' ? [t.fromStage, t.toStage] : [t.toStage, t.fromStage];
        const peer = plan.ranks[ins.peer]!;
        if (plan.stages[mine]!.ppRank !== r.ppRank || plan.stages[theirs]!.ppRank !== peer.ppRank || peer.dpRank !== r.dpRank) {
          fail(`${says}: tensor ${ins.tensor} goes from stage ${t.fromStage} to stage ${t.toStage}, not between this rank and rank ${ins.peer}`);
        }
      } else if (ins.kind === 'ALLREDUCE') {
        if (!isIndex(ins.bucket, plan.buckets.length)) fail(`${says} reduces bucket ${ins.bucket} of ${plan.buckets.length}`);
        const b = plan.buckets[ins.bucket]!;
        if (ins.group !== b.group) fail(`${says} reduces over group ${ins.group}; the bucket's group is ${b.group}`);
        if (!plan.groups[b.group]!.ranks.includes(w)) fail(`${says}: the rank is not in the bucket's group`);
        if (reduced.has(ins.bucket)) fail(`${says} reduces the bucket again (instruction ${reduced.get(ins.bucket)} did)`);
        reduced.set(ins.bucket, i);
      } else if (ins.kind === 'OPTIMIZER_STEP') {
        if (optimizer >= 0) fail(`${says}: a second optimizer step`);
        optimizer = i;
      }
    });
    for (const s of stages) for (let mb = 0; mb < m; mb++) for (const [k, what] of [['F', 'forward'], ['B', 'input-gradient'], ['W', 'weight-gradient']] as const) {
      if (!done.has(`${k}:${s}:${mb}`)) fail(`${who} never runs the ${what} work of stage ${s} microbatch ${mb}`);
    }
    for (const [b, bucket] of plan.buckets.entries()) {
      if (plan.groups[bucket.group]!.ranks.includes(w) && !reduced.has(b)) fail(`${who} never reduces bucket ${b}, whose group it is in`);
    }
    if (optimizer < 0) fail(`${who} has no optimizer step`);
    // A bucket's gradients are final only once every backward of this rank's stages with a gradient in it ran.
    for (const [b, i] of reduced) {
      const says = `${who} instruction ${i} (${label(r.instructions[i]!)})`;
      for (const s of plan.stages) {
        if (s.ppRank !== r.ppRank || !s.grads.some((g) => plan.buckets[b]!.params.includes(g.param))) continue;
        for (let mb = 0; mb < m; mb++) if (done.get(`W:${s.index}:${mb}`)! > i) fail(`${says} comes before the weight-gradient work of stage ${s.index} microbatch ${mb}`);
      }
    }
  }
}
