import { CleaveError } from '../../src/core/errors.js';
import type { ScheduleName } from '../cost/memory.js';

/**
 * Compute work of one stage for one microbatch: F forward, B input-gradient, W weight-gradient,
 * BW the whole backward (schedules that do not split it).
 */
export type WorkKind = 'F' | 'B' | 'W' | 'BW';

export interface Work {
  kind: WorkKind;
  stage: number;
  mb: number;
}

export interface Timed extends Work {
  rank: number;
  start: number;
  end: number;
}

/** Per-stage costs (seconds) and the transfer time of the boundary after each stage. */
export interface StageTimes {
  f: readonly number[];
  b: readonly number[];
  w: readonly number[];
  /** comm[s]: moving the activation from stage s to s+1 (and its gradient back). */
  comm: readonly number[];
}

export interface PipelineSpec {
  schedule: ScheduleName;
  /** Pipeline ranks. */
  p: number;
  /** Stages per rank. */
  v: number;
  /** Microbatches per step. */
  m: number;
  times: StageTimes;
  /** SMP's active_microbatches: at most this many microbatches in flight on a rank. */
  active?: number;
}

export interface PipelineSchedule {
  spec: PipelineSpec;
  /** Compute work per rank, in execution order, with predicted times. */
  ranks: Timed[][];
  makespan: number;
  /** Per rank: idle fraction of the makespan. */
  bubble: number[];
  /** Whether backward is split into B and W. */
  split: boolean;
}

/** Which rank runs stage s: one stage per rank, round-robin for interleaving, a V for ZB-V. */
export function stageRank(schedule: ScheduleName, s: number, p: number): number {
  if (schedule === 'zbv') return s < p ? s : 2 * p - 1 - s;
  return s % p;
}

export function checkSpec(spec: PipelineSpec): void {
  const { schedule, p, v, m } = spec;
  if (!Number.isInteger(p) || p < 1) throw new CleaveError(`pipeline ranks must be a positive integer, got ${p}`);
  if (!Number.isInteger(m) || m < 1) throw new CleaveError(`microbatches must be a positive integer, got ${m}`);
  if (schedule === 'zbv' && v !== 2) throw new CleaveError(`zbv places two stages on each rank: use --virtual-stages 2 (got ${v})`);
  if (schedule === 'interleaved-1f1b') {
    if (v < 2) throw new CleaveError(`interleaved-1f1b needs --virtual-stages ≥ 2 (got ${v}); with one stage per rank use 1f1b`);
    if (m % p) throw new CleaveError(`interleaved-1f1b runs microbatches in groups of the ${p} pipeline ranks: ${m} microbatches is not a multiple of ${p}`);
  } else if (schedule !== 'zbv' && v !== 1) throw new CleaveError(`${schedule} runs one stage per rank; virtual stages (${v}) need interleaved-1f1b or zbv`);
  if (spec.active !== undefined && (!Number.isInteger(spec.active) || spec.active < 1)) throw new CleaveError(`active_microbatches must be a positive integer, got ${spec.active}`);
}

/** The fixed orders of GPipe, 1F1B and Megatron's interleaved 1F1B, per rank. */
function fixedOrder(spec: PipelineSpec, r: number): Work[] {
  const { schedule, p, v, m } = spec;
  const out: Work[] = [];
  if (schedule === 'gpipe') {
    for (let mb = 0; mb < m; mb++) out.push({ kind: 'F', stage: r, mb });
    for (let mb = 0; mb < m; mb++) out.push({ kind: 'BW', stage: r, mb });
    return out;
  }
  if (schedule === '1f1b') {
    const warm = Math.min(Math.min(p - r - 1, spec.active ? spec.active - 1 : Infinity), m);
    let f = 0, b = 0;
    for (; f < warm; f++) out.push({ kind: 'F', stage: r, mb: f });
    while (b < m) {
      if (f < m) out.push({ kind: 'F', stage: r, mb: f++ });
      out.push({ kind: 'BW', stage: r, mb: b++ });
    }
    return out;
  }
  // Interleaved (Megatron-LM): virtual step k runs chunk (k / p) mod v of microbatch group k / (p·v).
  const total = m * v;
  const fwd = (k: number): Work => {
    const chunk = Math.floor(k / p) % v;
    const mb = Math.floor(k / (p * v)) * p + (k % p);
    return { kind: 'F', stage: chunk * p + r, mb };
  };
  const bwd = (k: number): Work => {
    const chunk = v - 1 - (Math.floor(k / p) % v);
    const mb = Math.floor(k / (p * v)) * p + (k % p);
    return { kind: 'BW', stage: chunk * p + r, mb };
  };
  let warm = Math.min((p - r - 1) * 2 + (v - 1) * p, total);
  if (spec.active) warm = Math.min(warm, spec.active * v - 1);
  let f = 0, b = 0;
  for (; f < warm; f++) out.push(fwd(f));
  while (b < total) {
    if (f < total) out.push(fwd(f++));
    out.push(bwd(b++));
  }
  return out;
}

interface Limits {
  /** Max microbatches per stage with F done and B not done. */
  inFlight: number;
  /** Max with B done and W not done (zero-bubble schedules defer W to fill bubbles). */
  pendingW: number;
}

function limits(spec: PipelineSpec, r: number): Limits {
  const { p } = spec;
  const a = spec.active ?? p;
  // active_microbatches past p buys room, as ZB-H2 trades memory for bubble: that many more
  // forwards may run ahead, and that many more weight gradients wait to fill the gaps.
  const extra = Math.max(0, a - p);
  if (spec.schedule === 'zb-h1') return { inFlight: Math.min(p - r, a) + extra, pendingW: p + extra };
  // ZB-V: two half-size stages per rank, each with at most p microbatches in flight (unless set):
  // 2p half-stage activations, 1F1B's peak on its first rank. Counting per stage keeps the deep
  // chunk moving.
  return { inFlight: a, pendingW: 2 * Math.max(a, p) };
}

/**
 * Predicts when each piece of work runs: a rank runs its work in order, each piece as soon as its
 * inputs have arrived (the previous stage's forward, the next stage's backward, plus the transfer
 * between ranks). Fixed-order schedules follow their order; the zero-bubble schedules pick greedily
 * among ready work — backward first, then forward within the memory limit, weight gradients to
 * fill what is left — which is how ZB-H1 and ZB-V fill the bubbles of 1F1B.
 */
export function schedulePipeline(spec: PipelineSpec): PipelineSchedule {
  checkSpec(spec);
  const { schedule, p, v, m, times } = spec;
  const S = p * v;
  const split = schedule === 'zb-h1' || schedule === 'zbv';
  const rankOf = (s: number) => stageRank(schedule, s, p);
  const done = new Map<string, number>();
  const key = (k: WorkKind, s: number, mb: number) => `${k}:${s}:${mb}`;
  const duration = (w: Work): number => (w.kind === 'F' ? times.f[w.stage]! : w.kind === 'B' ? times.b[w.stage]! : w.kind === 'W' ? times.w[w.stage]! : times.b[w.stage]! + times.w[w.stage]!);
  /** When `w`'s inputs are available, or undefined if a dependency has not been scheduled. */
  const ready = (w: Work): number | undefined => {
    const r = rankOf(w.stage);
    const after = (k: WorkKind, s: number, commFrom?: number): number | undefined => {
      const t = done.get(key(k, s, w.mb));
      if (t === undefined) return undefined;
      return commFrom !== undefined && rankOf(s) !== r ? t + times.comm[commFrom]! : t;
    };
    if (w.kind === 'F') return w.stage === 0 ? 0 : after('F', w.stage - 1, w.stage - 1);
    if (w.kind === 'W') return after('B', w.stage);
    const own = after('F', w.stage);
    if (own === undefined) return undefined;
    if (w.stage === S - 1) return own;
    const next = after(split ? 'B' : 'BW', w.stage + 1, w.stage);
    return next === undefined ? undefined : Math.max(own, next);
  };
  const free = new Array<number>(p).fill(0);
  const ranks: Timed[][] = Array.from({ length: p }, () => []);
  const record = (r: number, w: Work, start: number): void => {
    const end = start + duration(w);
    ranks[r]!.push({ ...w, rank: r, start, end });
    done.set(key(w.kind, w.stage, w.mb), end);
    free[r] = end;
  };

  if (!split) {
    const orders = Array.from({ length: p }, (_, r) => fixedOrder(spec, r));
    const pos = new Array<number>(p).fill(0);
    let remaining = orders.reduce((a, o) => a + o.length, 0);
    while (remaining) {
      // Run the rank whose next piece of work can start earliest.
      let best = -1, bestStart = Infinity;
      for (let r = 0; r < p; r++) {
        const w = orders[r]![pos[r]!];
        if (!w) continue;
        const t = ready(w);
        if (t === undefined) continue;
        const start = Math.max(t, free[r]!);
        if (start < bestStart) { bestStart = start; best = r; }
      }
      if (best < 0) throw new Error(`${schedule}: schedule generation is stuck (a bug in the order)`);
      record(best, orders[best]![pos[best]!++]!, bestStart);
      remaining--;
    }
  } else {
    const stagesOf = Array.from({ length: p }, (_, r) => Array.from({ length: S }, (_, s) => s).filter((s) => rankOf(s) === r));
    const next = { F: new Array<number>(S).fill(0), B: new Array<number>(S).fill(0), W: new Array<number>(S).fill(0) };
    const lim = Array.from({ length: p }, (_, r) => limits(spec, r));
    let remaining = 3 * S * m;
    const priority: Record<WorkKind, number> = { B: 0, F: 1, W: 2, BW: 0 };
    while (remaining) {
      let best: { r: number; w: Work; start: number } | undefined;
      for (let r = 0; r < p; r++) {
        let pending = 0;
        for (const s of stagesOf[r]!) pending += next.B[s]! - next.W[s]!;
        const cands: Work[] = [];
        for (const s of stagesOf[r]!) {
          if (next.B[s]! < m) cands.push({ kind: 'B', stage: s, mb: next.B[s]! });
          if (next.F[s]! < m && next.F[s]! - next.B[s]! < lim[r]!.inFlight) cands.push({ kind: 'F', stage: s, mb: next.F[s]! });
          // W waits while there is room to defer it, unless nothing else can ever come.
          if (next.W[s]! < next.B[s]!) cands.push({ kind: 'W', stage: s, mb: next.W[s]! });
        }
        for (const w of cands) {
          const t = ready(w);
          if (t === undefined) continue;
          const mustW = w.kind === 'W' && pending > lim[r]!.pendingW;
          const start = Math.max(t, free[r]!);
          // Deeper stages first among equals: they unblock the backward chain sooner.
          const better = !best || start < best.start - 1e-15 || (Math.abs(start - best.start) <= 1e-15 && (
            (mustW ? -1 : priority[w.kind]) < (best.w.kind === 'W' && pendingOf(best.r) > lim[best.r]!.pendingW ? -1 : priority[best.w.kind]) ||
            ((mustW ? -1 : priority[w.kind]) === (best.w.kind === 'W' && pendingOf(best.r) > lim[best.r]!.pendingW ? -1 : priority[best.w.kind]) && (w.stage > best.w.stage || (w.stage === best.w.stage && r < best.r)))));
          if (better) best = { r, w, start };
        }
      }
      if (!best) throw new Error(`${schedule}: schedule generation is stuck`);
      record(best.r, best.w, best.start);
      next[best.w.kind as 'F' | 'B' | 'W'][best.w.stage]!++;
      remaining--;
    }
    function pendingOf(r: number): number {
      let pending = 0;
      for (const s of stagesOf[r]!) pending += next.B[s]! - next.W[s]!;
      return pending;
    }
  }
  const makespan = Math.max(...free);
  const bubble = ranks.map((list) => (makespan ? 1 - list.reduce((a, w) => a + (w.end - w.start), 0) / makespan : 0));
  return { spec, ranks, makespan, bubble, split };
}
