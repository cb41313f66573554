import type { Value } from '../../src/core/ir/graph.js';
import type { Bucket, CommGroup, InstrKind, Instruction } from '../../src/core/plan/types.js';
import type { PipelineSchedule, Timed } from './pipeline.js';
import { type Boundary, type ProgramKind, type Programs, valueBytes } from './programs.js';

export type Placement = 'cluster' | 'spread';

export interface WorldSpec {
  pp: number;
  dp: number;
  placement: Placement;
  /** Largest gradient bucket, bytes (PyTorch DDP's default is 25 MiB). */
  bucketBytes?: number;
}

/** World rank of pipeline rank r in replica d: a pipeline's ranks adjacent (cluster) or interleaved (spread). */
export function worldRank(w: WorldSpec, r: number, d: number): number {
  return w.placement === 'cluster' ? d * w.pp + r : r * w.dp + d;
}

const blank = (kind: InstrKind, stage = -1, mb = -1): Instruction => ({ kind, stage, mb, tensor: -1, peer: -1, bucket: -1, group: -1, startMs: 0, endMs: 0 });

const WORK_KIND: Record<Timed['kind'], InstrKind> = { F: 'FORWARD', B: 'BACKWARD_B', W: 'BACKWARD_W', BW: 'BACKWARD' };
const PROGRAMS_OF: Record<Timed['kind'], ProgramKind[]> = { F: ['forward'], B: ['backwardB'], W: ['backwardW'], BW: ['backwardB', 'backwardW'] };

export interface InstructionSet {
  ranks: Instruction[][];
  groups: CommGroup[];
  buckets: Bucket[];
  /** World rank → (pipeline rank, replica). */
  coords: { pp: number; dp: number }[];
  /** Bucket id → the parameters it reduces. */
  bucketParams: Map<number, Value[]>;
}

/**
 * Turns each pipeline rank's compute order into instruction lists for every world rank: a RECV for
 * each boundary tensor before the first work that reads it (receives on one channel in the order
 * the sender sends), a SEND after the work that produces it, gradient all-reduce buckets as soon as
 * their last gradient is final, in one global order on every rank (so collectives on overlapping
 * groups cannot deadlock), and the optimizer step last.
 */
export function buildInstructions(progs: Programs, sched: PipelineSchedule, world: WorldSpec, rankOf: (stage: number) => number): InstructionSet {
  const { pp, dp } = world;
  const m = sched.spec.m;
  // The program that first reads each boundary tensor on its receiving stage.
  const order: ProgramKind[] = ['forward', 'backwardB', 'backwardW'];
  const firstReader = new Map<Boundary, ProgramKind>();
  for (const b of progs.boundaries) {
    const st = progs.stages[b.to]!;
    const reader = order.find((k) => st[k].some((n) => n.inputs.includes(b.value)));
    firstReader.set(b, reader!);
  }
  const producerProgram = (b: Boundary): ProgramKind => progs.programOf.get(b.value.producer!)!;

  // Per pipeline rank: compute work with the SENDs after it and the RECVs it needs (positions first).
  const local: Instruction[][] = [];
  for (let r = 0; r < pp; r++) {
    const list: Instruction[] = [];
    const recvNeeds: { b: Boundary; mb: number; at: number }[] = [];
    for (const w of sched.ranks[r]!) {
      const kinds = PROGRAMS_OF[w.kind];
      for (const b of progs.boundaries) {
        if (b.to === w.stage && rankOf(b.from) !== r && kinds.includes(firstReader.get(b)!)) recvNeeds.push({ b, mb: w.mb, at: list.length });
      }
      list.push(blank(WORK_KIND[w.kind], w.stage, w.mb));
      for (const b of progs.boundaries) {
        if (b.from === w.stage && rankOf(b.to) !== r && kinds.includes(producerProgram(b))) {
          list.push({ ...blank('SEND', w.stage, w.mb), tensor: b.id, peer: rankOf(b.to) });
        }
      }
    }
    local.push(withReceives(list, recvNeeds, rankOf));
  }
  // Receives on each channel follow the sender's order of sends: reorder per channel.
  for (let r = 0; r < pp; r++) local[r] = orderReceives(local, r);

  // Gradient buckets.
  const groups: CommGroup[] = [];
  const buckets: Bucket[] = [];
  const holders = new Map<Value, Set<number>>();
  for (const s of progs.stages) for (const g of s.grads) {
    const set = holders.get(g.param) ?? new Set<number>();
    set.add(s.ppRank);
    holders.set(g.param, set);
  }
  const cap = world.bucketBytes ?? 25 * 2 ** 20;
  const byHolders = new Map<string, Value[]>();
  for (const [p, set] of holders) {
    const key = [...set].sort((a, b) => a - b).join(',');
    if (set.size === 1 && dp === 1) continue;
    const list = byHolders.get(key) ?? [];
    list.push(p);
    byHolders.set(key, list);
  }
  const lastWork = (r: number, params: Value[]): number => {
    // Position of the last backward on rank r (last microbatch) of a stage contributing to these params.
    const stages = new Set(progs.stages.filter((s) => s.ppRank === r && s.grads.some((g) => params.includes(g.param))).map((s) => s.index));
    let pos = -1;
    local[r]!.forEach((ins, i) => {
      if ((ins.kind === 'BACKWARD' || ins.kind === 'BACKWARD_W') && stages.has(ins.stage) && ins.mb === m - 1) pos = Math.max(pos, i);
    });
    return pos;
  };
  const pending: { bucket: Bucket; ready: Map<number, number>; readyTime: number }[] = [];
  const bucketParams = new Map<number, Value[]>();
  for (const [key, params] of byHolders) {
    const members = key.split(',').map(Number);
    const ranks: number[] = [];
    for (const r of members) for (let d = 0; d < dp; d++) ranks.push(worldRank(world, r, d));
    ranks.sort((a, b) => a - b);
    const kind: CommGroup['kind'] = members.length > 1 ? 'tied' : 'dp';
    let group = groups.find((g) => g.kind === kind && g.ranks.join() === ranks.join());
    if (!group) groups.push((group = { id: groups.length, kind, ranks }));
    // Parameters in the order their gradients become final, newest first, cut into buckets.
    const sorted = [...params].sort((a, b) => a.name.localeCompare(b.name));
    let cur: Value[] = [], bytes = 0;
    const flush = (): void => {
      if (!cur.length) return;
      const ready = new Map(members.map((r) => [r, lastWork(r, cur)]));
      const stage = progs.stages.find((s) => s.grads.some((g) => g.param === cur[0]))!.index;
      const readyTime = Math.max(...members.map((r) => endOfWork(sched, r, ready.get(r)!, local[r]!)));
      const bucket: Bucket = { id: buckets.length, group: group!.id, params: [], bytes, scale: 1 / dp, stage };
      buckets.push(bucket);
      bucketParams.set(bucket.id, cur);
      pending.push({ bucket, ready, readyTime });
      cur = [];
      bytes = 0;
    };
    for (const p of sorted) {
      const b = valueBytes(p);
      if (cur.length && bytes + b > cap) flush();
      cur.push(p);
      bytes += b;
    }
    flush();
  }
  // One global order of collectives, by when they become ready.
  pending.sort((a, b) => a.readyTime - b.readyTime || a.bucket.id - b.bucket.id);
  const ranks: Instruction[][] = [];
  const coords: { pp: number; dp: number }[] = [];
  for (let d = 0; d < dp; d++) {
    for (let r = 0; r < pp; r++) {
      const w = worldRank(world, r, d);
      coords[w] = { pp: r, dp: d };
      const list = local[r]!.map((ins) => (ins.kind === 'SEND' || ins.kind === 'RECV' ? { ...ins, peer: worldRank(world, ins.peer, d) } : { ...ins }));
      // Insert this rank's collectives after their ready points, keeping the global order.
      const mine = pending.filter((x) => x.ready.has(r));
      const inserts: { at: number; ins: Instruction }[] = [];
      let floor = -1;
      for (const x of mine) {
        floor = Math.max(floor, x.ready.get(r)!);
        inserts.push({ at: floor, ins: { ...blank('ALLREDUCE', x.bucket.stage, m - 1), bucket: x.bucket.id, group: x.bucket.group } });
      }
      const out: Instruction[] = [];
      let k = 0;
      list.forEach((ins, i) => {
        out.push(ins);
        // After the compute at position i, and after the SENDs that follow it.
        while (k < inserts.length && inserts[k]!.at <= i && !(list[i + 1]?.kind === 'SEND')) out.push(inserts[k++]!.ins);
      });
      while (k < inserts.length) out.push(inserts[k++]!.ins);
      out.push(blank('OPTIMIZER_STEP'));
      ranks[w] = out;
    }
  }
  return { ranks, groups, buckets, coords, bucketParams };
}

function endOfWork(sched: PipelineSchedule, r: number, pos: number, list: Instruction[]): number {
  const ins = list[pos];
  if (!ins) return 0;
  const w = sched.ranks[r]!.find((x) => x.stage === ins.stage && x.mb === ins.mb && WORK_KIND[x.kind] === ins.kind);
  return w ? w.end : 0;
}

/** Inserts each RECV just before its first reader. */
function withReceives(list: Instruction[], needs: { b: Boundary; mb: number; at: number }[], rankOf: (s: number) => number): Instruction[] {
  const out: Instruction[] = [];
  let k = 0;
  list.forEach((ins, i) => {
    while (k < needs.length && needs[k]!.at === i) {
      const n = needs[k++]!;
      out.push({ ...blank('RECV', n.b.to, n.mb), tensor: n.b.id, peer: rankOf(n.b.from) });
    }
    out.push(ins);
  });
  return out;
}

/**
 * Makes rank r's receives from each sender follow that sender's order of sends to r: the k-th
 * receive on a channel moves up to just before the earliest first-use among receives k, k+1, …
 * (posting a receive early only holds its buffer longer).
 */
function orderReceives(local: Instruction[][], r: number): Instruction[] {
  const list = local[r]!;
  const recvs = list.map((ins, i) => ({ ins, i })).filter((x) => x.ins.kind === 'RECV');
  const bySender = new Map<number, { ins: Instruction; i: number }[]>();
  for (const x of recvs) bySender.set(x.ins.peer, [...(bySender.get(x.ins.peer) ?? []), x]);
  const placed = new Map<Instruction, number>();
  for (const [peer, mine] of bySender) {
    const sends = local[peer]!.filter((ins) => ins.kind === 'SEND' && ins.peer === r);
    // Need position of each (tensor, mb) on this rank.
    const need = new Map(mine.map((x) => [`${x.ins.tensor}:${x.ins.mb}`, x]));
    const seq = sends.map((s) => need.get(`${s.tensor}:${s.mb}`)).filter((x): x is { ins: Instruction; i: number } => !!x);
    let suffix = Infinity;
    for (let k = seq.length - 1; k >= 0; k--) {
      suffix = Math.min(suffix, seq[k]!.i);
      // Ties keep the sender's order through a fractional offset.
      placed.set(seq[k]!.ins, suffix - 1 + k / (seq.length + 1) / 2);
    }
  }
  const others = list.filter((ins) => ins.kind !== 'RECV').map((ins) => ({ ins, key: list.indexOf(ins) }));
  const rs = recvs.map((x) => ({ ins: x.ins, key: placed.get(x.ins) ?? x.i - 0.5 }));
  return [...others, ...rs].sort((a, b) => a.key - b.key).map((x) => x.ins);
}
