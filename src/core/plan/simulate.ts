import { CleaveError } from '../errors.js';
import type { Bucket, CommGroup, Instruction } from './types.js';

/** What the simulator needs to know besides the instruction lists. */
export interface SimInput {
  ranks: Instruction[][];
  groups: readonly CommGroup[];
  buckets: readonly Bucket[];
  /** Boundary tensor id → bytes, sending stage, receiving stage. */
  tensors: readonly { id: number; bytes: number; fromStage: number; toStage: number; direction: 'activation' | 'gradient' }[];
  /** Stage → pipeline rank, and world rank → pipeline rank. */
  stageRank: (stage: number) => number;
  ppRankOf: (world: number) => number;
  /** Which programs of a stage read a boundary tensor (so the simulator knows who waits for it). */
  readers: (tensor: number) => readonly ('FORWARD' | 'BACKWARD_B' | 'BACKWARD_W')[];
  /** Milliseconds of a compute instruction, of a transfer, of an all-reduce. */
  computeMs: (ins: Instruction) => number;
  transferMs: (bytes: number, from: number, to: number) => number;
  allreduceMs: (bytes: number, ranks: readonly number[]) => number;
}

export interface SimResult {
  /** Per rank, per instruction: predicted start and end (ms). */
  times: { start: number; end: number }[][];
  stepMs: number;
}

const label = (ins: Instruction): string => {
  switch (ins.kind) {
    case 'SEND': return `SEND tensor ${ins.tensor} mb ${ins.mb} to rank ${ins.peer}`;
    case 'RECV': return `RECV tensor ${ins.tensor} mb ${ins.mb} from rank ${ins.peer}`;
    case 'ALLREDUCE': return `ALLREDUCE bucket ${ins.bucket} (group ${ins.group})`;
    case 'OPTIMIZER_STEP': return 'OPTIMIZER_STEP';
    default: return `${ins.kind} stage ${ins.stage} mb ${ins.mb}`;
  }
};

const COMPUTE = new Set(['FORWARD', 'BACKWARD_B', 'BACKWARD_W', 'BACKWARD', 'OPTIMIZER_STEP']);
const runs = (ins: Instruction, prog: 'FORWARD' | 'BACKWARD_B' | 'BACKWARD_W'): boolean =>
  ins.kind === prog || (ins.kind === 'BACKWARD' && (prog === 'BACKWARD_B' || prog === 'BACKWARD_W'));

/**
 * Runs every rank's instruction list together, as the runtime would: compute in list order on each
 * rank; each SEND matched to the receive at the same position on its channel (sender → receiver);
 * each collective matched across its group in list order; compute waits for the tensors it reads.
 * Proves the plan consistent — every send meets its receive, in order, with the same tensor; every
 * input exists before use; collectives agree — and predicts each instruction's start and end.
 * A plan that cannot finish is reported with the ranks that are stuck and where.
 */
export function simulate(inp: SimInput): SimResult {
  const R = inp.ranks.length;
  type Ref = [number, number];
  const deps: Ref[][][] = inp.ranks.map((l) => l.map(() => []));
  const errors: string[] = [];

  // Channels: k-th send from a to b meets the k-th receive on b from a.
  const sends = new Map<string, Ref[]>(), recvs = new Map<string, Ref[]>();
  inp.ranks.forEach((list, r) => list.forEach((ins, i) => {
    if (ins.kind === 'SEND') sends.set(`${r}>${ins.peer}`, [...(sends.get(`${r}>${ins.peer}`) ?? []), [r, i]]);
    if (ins.kind === 'RECV') recvs.set(`${ins.peer}>${r}`, [...(recvs.get(`${ins.peer}>${r}`) ?? []), [r, i]]);
  }));
  const matchOf = new Map<string, Ref>();
  for (const [ch, rs] of recvs) {
    const ss = sends.get(ch) ?? [];
    rs.forEach((rref, k) => {
      const sref = ss[k];
      const rin = inp.ranks[rref[0]]![rref[1]]!;
      if (!sref) return; // unmatched: this receive waits forever (reported as stuck below)
      const sin = inp.ranks[sref[0]]![sref[1]]!;
      if (sin.tensor !== rin.tensor || sin.mb !== rin.mb) {
        errors.push(`channel rank ${sref[0]} → rank ${rref[0]}: send #${k} is tensor ${sin.tensor} mb ${sin.mb} (rank ${sref[0]} instruction ${sref[1]}) but receive #${k} expects tensor ${rin.tensor} mb ${rin.mb} (rank ${rref[0]} instruction ${rref[1]})`);
      }
      matchOf.set(`${rref[0]}:${rref[1]}`, sref);
      matchOf.set(`${sref[0]}:${sref[1]}`, rref);
    });
    ss.slice(rs.length).forEach((sref) => {
      errors.push(`rank ${sref[0]} instruction ${sref[1]} (${label(inp.ranks[sref[0]]![sref[1]]!)}) is never received`);
    });
  }
  for (const [ch, ss] of sends) {
    if (!recvs.has(ch)) for (const sref of ss) errors.push(`rank ${sref[0]} instruction ${sref[1]} (${label(inp.ranks[sref[0]]![sref[1]]!)}) is never received`);
  }

  // Collectives: each group's members must issue the same buckets in the same order.
  const collSeq = new Map<number, Map<number, Ref[]>>();
  inp.ranks.forEach((list, r) => list.forEach((ins, i) => {
    if (ins.kind !== 'ALLREDUCE') return;
    const g = collSeq.get(ins.group) ?? new Map<number, Ref[]>();
    g.set(r, [...(g.get(r) ?? []), [r, i]]);
    collSeq.set(ins.group, g);
  }));
  const collMembers = new Map<string, Ref[]>();
  for (const group of inp.groups) {
    const seqs = collSeq.get(group.id) ?? new Map<number, Ref[]>();
    const lens = group.ranks.map((r) => seqs.get(r)?.length ?? 0);
    const n = Math.max(0, ...lens);
    for (let k = 0; k < n; k++) {
      const refs = group.ranks.map((r) => seqs.get(r)?.[k]).filter((x): x is Ref => !!x);
      const ids = new Set(refs.map(([r, i]) => inp.ranks[r]![i]!.bucket));
      if (ids.size > 1) errors.push(`group ${group.id} (ranks ${group.ranks.join(', ')}): collective #${k} is bucket ${[...ids].join(' on some ranks and bucket ')} on others`);
      for (const ref of refs) collMembers.set(`${ref[0]}:${ref[1]}`, refs);
    }
    for (const r of seqs.keys()) if (!group.ranks.includes(r)) errors.push(`rank ${r} joins collective group ${group.id}, which it is not a member of`);
  }

  // Dependencies within each rank.
  inp.ranks.forEach((list, r) => {
    let prevCompute = -1, prevColl = -1;
    const lastRecv = new Map<string, number>();
    const lastSendTo = new Map<number, number>();
    const doneWork = new Map<string, number>();
    list.forEach((ins, i) => {
      const d = deps[r]![i]!;
      if (COMPUTE.has(ins.kind)) {
        if (prevCompute >= 0) d.push([r, prevCompute]);
        if (ins.kind === 'OPTIMIZER_STEP') {
          list.forEach((x, j) => { if (x.kind === 'ALLREDUCE' && j < i) d.push([r, j]); });
        } else {
          // Inputs: boundary tensors this program reads, received or produced on this rank earlier.
          for (const t of inp.tensors) {
            if (t.toStage !== ins.stage || !inp.readers(t.id).some((k) => runs(ins, k))) continue;
            const recv = lastRecv.get(`${t.id}:${ins.mb}`);
            const local = inp.stageRank(t.fromStage) === inp.ppRankOf(r);
            const producer = doneWork.get(`${t.direction === 'activation' ? 'F' : 'B'}:${t.fromStage}:${ins.mb}`);
            if (recv !== undefined) d.push([r, recv]);
            else if (local && producer !== undefined) d.push([r, producer]);
            else errors.push(`rank ${r} instruction ${i} (${label(ins)}) reads tensor ${t.id} of microbatch ${ins.mb}, which it has not received`);
          }
          // Backward needs this stage's forward; W needs B.
          if (ins.kind !== 'FORWARD') {
            const f = doneWork.get(`F:${ins.stage}:${ins.mb}`);
            if (f === undefined) errors.push(`rank ${r} instruction ${i} (${label(ins)}) runs before the forward of stage ${ins.stage} microbatch ${ins.mb}`);
          }
          if (ins.kind === 'BACKWARD_W' && doneWork.get(`B:${ins.stage}:${ins.mb}`) === undefined) {
            errors.push(`rank ${r} instruction ${i} (${label(ins)}) runs before the input-gradient work of stage ${ins.stage} microbatch ${ins.mb}`);
          }
          const key = ins.kind === 'FORWARD' ? 'F' : ins.kind === 'BACKWARD_W' ? 'W' : 'B';
          if (doneWork.has(`${key}:${ins.stage}:${ins.mb}`)) errors.push(`rank ${r} instruction ${i} (${label(ins)}) repeats work already done`);
          doneWork.set(`${key}:${ins.stage}:${ins.mb}`, i);
          if (ins.kind === 'BACKWARD') doneWork.set(`W:${ins.stage}:${ins.mb}`, i);
        }
        prevCompute = i;
      } else if (ins.kind === 'SEND') {
        if (prevCompute >= 0) d.push([r, prevCompute]);
        const ps = lastSendTo.get(ins.peer);
        if (ps !== undefined) d.push([r, ps]);
        lastSendTo.set(ins.peer, i);
      } else if (ins.kind === 'RECV') {
        lastRecv.set(`${ins.tensor}:${ins.mb}`, i);
        const m = matchOf.get(`${r}:${i}`);
        if (m) d.push(m);
      } else if (ins.kind === 'ALLREDUCE') {
        if (prevCompute >= 0) d.push([r, prevCompute]);
        if (prevColl >= 0) d.push([r, prevColl]);
        prevColl = i;
      }
    });
  });
  if (errors.length) throw new CleaveError(`the plan is inconsistent:\n  ${errors.slice(0, 20).join('\n  ')}${errors.length > 20 ? `\n  … and ${errors.length - 20} more` : ''}`);

  // Finish times by repeated relaxation in dependency order; whatever never finishes is stuck.
  const times = inp.ranks.map((l) => l.map(() => ({ start: NaN, end: NaN })));
  const done = inp.ranks.map((l) => l.map(() => false));
  const pos = new Array<number>(R).fill(0);
  const ready = (ref: Ref): boolean => done[ref[0]]![ref[1]]!;
  const end = (ref: Ref): number => times[ref[0]]![ref[1]]!.end;
  const bytesOf = (ins: Instruction): number => inp.tensors[ins.tensor]?.bytes ?? 0;
  let progress = true;
  while (progress) {
    progress = false;
    for (let r = 0; r < R; r++) {
      const list = inp.ranks[r]!;
      // Compute runs in list order; communication is posted ahead and finishes when its peer is
      // ready, so it is scanned past a compute instruction that still waits.
      let computeBlocked = false;
      for (let i = pos[r]!; i < list.length; i++) {
        if (done[r]![i]) continue;
        const ins = list[i]!;
        const d = deps[r]![i]!;
        if (ins.kind === 'SEND') continue; // finishes together with its receive
        if (ins.kind === 'RECV') {
          const m = matchOf.get(`${r}:${i}`);
          if (!m || !sendReady(m)) continue;
          const prev = prevOnChannel(r, i);
          if (prev === undefined) continue;
          const start = Math.max(sendReadyTime(m), prev);
          const e = start + inp.transferMs(bytesOf(ins), ins.peer, r);
          times[r]![i] = { start, end: e };
          times[m[0]]![m[1]] = { start: sendReadyTime(m), end: e };
          done[r]![i] = done[m[0]]![m[1]] = true;
          progress = true;
          continue;
        }
        if (ins.kind === 'ALLREDUCE') {
          const members = collMembers.get(`${r}:${i}`) ?? [[r, i] as Ref];
          const readyAt = members.map(([mr, mi]) => (deps[mr]![mi]!.every(ready) ? Math.max(0, ...deps[mr]![mi]!.map(end)) : NaN));
          if (readyAt.some(Number.isNaN)) continue;
          const start = Math.max(...readyAt);
          const e = start + inp.allreduceMs(inp.buckets[ins.bucket]!.bytes, inp.groups[ins.group]!.ranks);
          for (const [mr, mi] of members) {
            times[mr]![mi] = { start, end: e };
            done[mr]![mi] = true;
          }
          progress = true;
          continue;
        }
        if (computeBlocked) continue;
        if (!d.every(ready)) {
          computeBlocked = true;
          continue;
        }
        const start = Math.max(0, ...d.map(end));
        times[r]![i] = { start, end: start + inp.computeMs(ins) };
        done[r]![i] = true;
        progress = true;
      }
      while (pos[r]! < list.length && done[r]![pos[r]!]) pos[r]!++;
    }
  }

  /** A send can go once what it sends is computed and the sends before it on its channel went. */
  function sendReady(ref: Ref): boolean {
    return deps[ref[0]]![ref[1]]!.every(ready);
  }
  function sendReadyTime(ref: Ref): number {
    return Math.max(0, ...deps[ref[0]]![ref[1]]!.map(end));
  }
  /** When the channel's previous receive finished (undefined: not yet). */
  function prevOnChannel(r: number, i: number): number | undefined {
    const ins = inp.ranks[r]![i]!;
    for (let j = i - 1; j >= 0; j--) {
      const x = inp.ranks[r]![j]!;
      if (x.kind === 'RECV' && x.peer === ins.peer) return done[r]![j] ? times[r]![j]!.end : undefined;
    }
    return 0;
  }

  const stuck: string[] = [];
  for (let r = 0; r < R; r++) {
    const i = done[r]!.indexOf(false);
    if (i >= 0) stuck.push(`rank ${r} at instruction ${i}: ${label(inp.ranks[r]![i]!)}`);
  }
  if (stuck.length) throw new CleaveError(`the plan deadlocks: ${stuck.length} rank${stuck.length > 1 ? 's' : ''} cannot finish:\n  ${stuck.join('\n  ')}`);
  const stepMs = Math.max(0, ...times.flatMap((l) => l.map((t) => t.end)));
  return { times, stepMs };
}
