import { readFileSync } from 'node:fs';
import { CleaveError } from '../errors.js';
import { DEFAULT_WIDTH, MIN_WIDTH, fitTable, gantt, wrap } from './render.js';
import { planTrace } from './visual.js';
import type { Instruction, Plan } from './types.js';

/**
 * Where a measured trace ran: the backend, and the device — `cpu`, or the GPU's name as the driver
 * reports it (`NVIDIA H100 80GB HBM3`). Traces written before cleave recorded it have none.
 */
export interface TraceDevice {
  readonly backend: 'cpu' | 'cuda';
  readonly device: string;
}

/** A plan with the measured times of one step (`readMeasured`), and where they were measured if the trace says. */
export type MeasuredRun = Plan & { readonly ranOn?: TraceDevice };

/**
 * The cost profile of `profiles` (the compiler's: h100, h200, a100, cpu) for a device as a trace
 * or the driver names it: `cpu`, a profile's own name, or a GPU name holding exactly one profile's
 * name as a word (`NVIDIA H100 80GB HBM3` → h100, `NVIDIA H200` → h200, `NVIDIA A100-SXM4-80GB` →
 * a100). Undefined where none fits (`NVIDIA L4`, `NVIDIA GH200 480GB`): cleave has no profile for it.
 */
export function deviceProfileName(device: string, profiles: readonly string[]): string | undefined {
  const d = device.trim().toLowerCase();
  if (!d) return undefined;
  if (profiles.includes(d)) return d;
  const hits = profiles.filter((k) => k !== 'cpu' && new RegExp(`(^|[^a-z0-9])${k}([^a-z0-9]|$)`).test(d));
  return hits.length === 1 ? hits[0] : undefined;
}

/**
 * What to tell someone comparing a plan's predictions with a trace measured on another device
 * than the one the plan was costed for; undefined where they match or the trace does not say
 * where it ran.
 */
export function deviceNote(plan: Plan, ranOn: TraceDevice | undefined, profiles: readonly string[], subject = 'this trace ran on'): string | undefined {
  if (!ranOn) return undefined;
  const costed = plan.schedule.device.toLowerCase();
  const profile = ranOn.backend === 'cpu' ? 'cpu' : deviceProfileName(ranOn.device, profiles);
  if (profile === costed) return undefined;
  const head = `the plan was costed for ${costed}; ${subject}`;
  if (profile === 'cpu') return `${head} cpu (CPU ranks): its predictions are ${costed}'s — compile with --device cpu to compare like with like`;
  if (profile) return `${head} ${ranOn.device} (${profile}): its predictions are ${costed}'s — compile with --device ${profile} to compare like with like`;
  return `${head} ${ranOn.device}, a device cleave has no cost profile for (it has ${profiles.join(', ')}): its predictions are ${costed}'s, not this device's — to predict for it, measure its op times with cleave profile and compile with --profile`;
}

/** When each instruction of one rank ran: [start, end] wall-clock ms, or null where it did not. */
export type RankTimes = readonly (readonly [number, number] | null)[];

/**
 * The plan with its instructions' times replaced by measured ones: each rank's list as it ran in
 * one step, all ranks on one clock from the earliest start (0 ms). The prediction's step time
 * becomes the measured one, so the timeline printers and trace writers draw it unchanged.
 */
export function measuredPlan(plan: Plan, times: readonly RankTimes[], origin?: number): Plan {
  if (times.length !== plan.ranks.length) throw new CleaveError(`measured times for ${times.length} ranks; the plan has ${plan.ranks.length}`);
  const starts = times.flatMap((r) => r.flatMap((t) => (t ? [t[0]] : [])));
  if (!starts.length) throw new CleaveError('no instruction was timed');
  const t0 = origin ?? Math.min(...starts);
  let end = 0;
  const ranks = plan.ranks.map((r, k) => {
    const rt = times[k]!;
    if (rt.length > r.instructions.length) throw new CleaveError(`rank ${k}: ${rt.length} timed instructions; the plan has ${r.instructions.length}`);
    let last = 0;
    const instructions: Instruction[] = r.instructions.map((ins, i) => {
      const t = rt[i];
      // An instruction that did not run (a skipped update) is drawn as an instant where the rank was.
      const [a, b] = t ? [t[0] - t0, t[1] - t0] : [last, last];
      last = Math.max(last, b);
      return { ...ins, startMs: a, endMs: b };
    });
    end = Math.max(end, last);
    const busy = instructions.filter((x) => x.kind !== 'SEND' && x.kind !== 'RECV' && x.kind !== 'ALLREDUCE').reduce((a, x) => a + (x.endMs - x.startMs), 0);
    return { ...r, instructions, bubble: last ? 1 - busy / last : 0 };
  });
  return { ...plan, ranks, prediction: { ...plan.prediction, stepMs: end } };
}

/** What a rank's host did in the timed step (`Executor.phases`): named spans, wall-clock ms like RankTimes. */
export type HostPhases = readonly { readonly name: string; readonly start: number; readonly end: number }[];

/**
 * The measured trace of one step (Perfetto's JSON): each rank's instructions on its compute and
 * communication tracks and, where given, what its host was doing on a third, all from one origin,
 * so that a device idle while its host was busy shows as such.
 */
export function measuredTrace(plan: Plan, times: readonly RankTimes[], host: readonly (HostPhases | undefined)[] = [], ranOn?: TraceDevice): unknown {
  const starts = [...times.flatMap((r) => r.flatMap((t) => (t ? [t[0]] : []))), ...host.flatMap((h) => (h ?? []).map((p) => p.start))];
  const origin = starts.length ? Math.min(...starts) : undefined;
  const trace = planTrace(measuredPlan(plan, times, origin), true) as { traceEvents: unknown[]; metadata: Record<string, unknown> };
  if (ranOn) Object.assign(trace.metadata, { backend: ranOn.backend, device: ranOn.device });
  host.forEach((phases, rank) => {
    if (!phases?.length) return;
    trace.traceEvents.push({ name: 'thread_name', ph: 'M', pid: rank, tid: 2, args: { name: 'host' } });
    for (const p of phases) trace.traceEvents.push({ name: p.name, cat: 'host', ph: 'X', pid: rank, tid: 2, ts: (p.start - origin!) * 1000, dur: Math.max(0, p.end - p.start) * 1000 });
  });
  return trace;
}

interface TraceEvent { ph?: string; cat?: string; name?: string; pid?: number; ts?: number; dur?: number; args?: { index?: number } }

interface TraceMetadata { measured?: boolean; model?: string; backend?: unknown; device?: unknown }

/** A measured trace's events, checked to be one (`cleave run --trace`) of this plan's model, and where it ran if it says. */
function readTrace(file: string, plan: Plan): { events: TraceEvent[]; ranOn?: TraceDevice } {
  let trace: { traceEvents?: unknown; metadata?: TraceMetadata };
  try {
    trace = JSON.parse(readFileSync(file, 'utf8')) as typeof trace;
  } catch (e) {
    throw new CleaveError(`${file}: not a trace cleave run --trace wrote (${(e as Error).message})`);
  }
  if (!Array.isArray(trace.traceEvents) || trace.metadata?.measured !== true) throw new CleaveError(`${file}: not a measured trace (write one with cleave run --trace)`);
  if (trace.metadata.model !== plan.model.name) throw new CleaveError(`${file}: measured on model '${trace.metadata.model}', not this plan's '${plan.model.name}'`);
  const { backend, device } = trace.metadata;
  let ranOn: TraceDevice | undefined;
  if (device !== undefined || backend !== undefined) {
    if (typeof device !== 'string' || !device.trim() || (backend !== undefined && backend !== 'cpu' && backend !== 'cuda')) {
      throw new CleaveError(`${file}: the trace's device (${JSON.stringify({ backend, device })}) is not a backend cpu or cuda with a device name`);
    }
    ranOn = { backend: (backend as 'cpu' | 'cuda' | undefined) ?? (device.trim().toLowerCase() === 'cpu' ? 'cpu' : 'cuda'), device };
  }
  return { events: trace.traceEvents as TraceEvent[], ranOn };
}

/**
 * The host phases of a measured trace, by rank (empty where the trace has none), in ms on the
 * clock `readMeasured` puts the instructions on (0 at the first instruction; a step's data comes
 * before it).
 */
export function readHostPhases(file: string, plan: Plan): HostPhases[] {
  const events = readTrace(file, plan).events.filter((ev) => ev.ph === 'X');
  const origin = Math.min(...events.filter((ev) => ev.cat !== 'host').map((ev) => ev.ts ?? 0)) / 1000;
  const out: { name: string; start: number; end: number }[][] = plan.ranks.map(() => []);
  for (const ev of events) {
    if (ev.cat !== 'host') continue;
    const start = (ev.ts ?? 0) / 1000 - origin;
    out[ev.pid ?? -1]?.push({ name: ev.name ?? '', start, end: start + (ev.dur ?? 0) / 1000 });
  }
  return out;
}

/**
 * Reads a measured trace (`cleave run --trace`) back into per-rank times, checked against the plan
 * it ran, with where it ran (`ranOn`) where the trace records it.
 */
export function readMeasured(file: string, plan: Plan): MeasuredRun {
  const times: [number, number][][] = plan.ranks.map(() => []);
  const { events, ranOn } = readTrace(file, plan);
  for (const ev of events) {
    if (ev.ph !== 'X' || ev.cat === 'host') continue;
    const r = times[ev.pid ?? -1], i = ev.args?.index;
    if (!r || i === undefined || i >= plan.ranks[ev.pid!]!.instructions.length) throw new CleaveError(`${file}: an event of rank ${ev.pid} instruction ${i} that this plan does not have`);
    r[i] = [(ev.ts ?? 0) / 1000, ((ev.ts ?? 0) + (ev.dur ?? 0)) / 1000];
  }
  plan.ranks.forEach((r, k) => {
    if (times[k]!.filter(Boolean).length !== r.instructions.length) throw new CleaveError(`${file}: rank ${k} has ${times[k]!.filter(Boolean).length} timed instructions; the plan has ${r.instructions.length}`);
  });
  const measured = measuredPlan(plan, times);
  return ranOn ? { ...measured, ranOn } : measured;
}

const COMPUTE = new Set(['FORWARD', 'BACKWARD_B', 'BACKWARD_W', 'BACKWARD', 'OPTIMIZER_STEP']);

/**
 * Predicted beside measured: where the trace ran on another device than the plan was costed for,
 * a note saying so; per rank the step, its compute time and bubble, then where the trace has them
 * the host's phases (ms in each, and when the rank's first instruction began after its host began
 * the step), then the measured timeline. Every line is at most `width` (≥ MIN_WIDTH) columns.
 */
export function renderComparison(plan: Plan, measured: MeasuredRun, width = DEFAULT_WIDTH, host: readonly HostPhases[] = [], note?: string): string {
  const W = Math.max(MIN_WIDTH, Math.floor(width));
  const busy = (ins: readonly Instruction[]) => ins.filter((x) => COMPUTE.has(x.kind)).reduce((a, x) => a + (x.endMs - x.startMs), 0);
  const pct = (p: number, m: number) => (p > 0 ? `${m >= p ? '+' : ''}${((100 * (m - p)) / p).toFixed(1)}%` : '—');
  const rows = plan.ranks.map((r, k) => {
    const m = measured.ranks[k]!;
    const pEnd = Math.max(...r.instructions.map((x) => x.endMs)), mEnd = Math.max(...m.instructions.map((x) => x.endMs));
    return [String(k), pEnd.toFixed(3), mEnd.toFixed(3), pct(pEnd, mEnd), busy(r.instructions).toFixed(3), busy(m.instructions).toFixed(3),
      `${(100 * r.bubble).toFixed(1)}%`, `${(100 * m.bubble).toFixed(1)}%`];
  });
  const out = ['predicted and measured (one step)'];
  if (note) out.push(...wrap(note, W, 'note: ', '      '), '');
  out.push(fitTable(['rank', 'predicted ms', 'measured ms', 'Δ', 'compute pred.', 'compute meas.', 'bubble pred.', 'bubble meas.'], rows, W));
  out.push('', ...wrap(`step: predicted ${plan.prediction.stepMs.toFixed(3)} ms, measured ${measured.prediction.stepMs.toFixed(3)} ms (${pct(plan.prediction.stepMs, measured.prediction.stepMs)})`, W, '', '  '));
  const names = [...new Set(host.flatMap((h) => h.map((x) => x.name)))];
  if (names.length) {
    const hostRows = host.map((h, k) => {
      const ms = names.map((n) => h.filter((x) => x.name === n).reduce((a, x) => a + (x.end - x.start), 0).toFixed(3));
      // How long after its host began the step the rank's first instruction ran.
      const began = Math.min(...h.map((x) => x.start)), first = Math.min(...measured.ranks[k]!.instructions.map((x) => x.startMs));
      return [String(k), ...ms, h.length ? (first - began).toFixed(3) : '—'];
    });
    out.push('', 'host phases of the same step (ms)', fitTable(['rank', ...names, 'to first instruction'], hostRows, W));
  }
  out.push('', 'timeline (measured)', gantt(measured, W));
  return out.join('\n') + '\n';
}
