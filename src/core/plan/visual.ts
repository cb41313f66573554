import type { MeasuredRun } from './measured.js';
import type { Instruction, Plan } from './types.js';

const COLORS: Record<Instruction['kind'], string> = {
  FORWARD: '#4e79a7', BACKWARD_B: '#f28e2b', BACKWARD_W: '#59a14f', BACKWARD: '#f28e2b', OPTIMIZER_STEP: '#b07aa1',
  SEND: '#9c755f', RECV: '#bab0ac', ALLREDUCE: '#e15759',
};
const LABEL: Record<Instruction['kind'], string> = {
  FORWARD: 'F', BACKWARD_B: 'B', BACKWARD_W: 'W', BACKWARD: 'B', OPTIMIZER_STEP: 'O', SEND: 'send', RECV: 'recv', ALLREDUCE: 'all-reduce',
};
const NAME: Record<Instruction['kind'], string> = {
  FORWARD: 'forward', BACKWARD_B: 'backward (input grads)', BACKWARD_W: 'weight grads', BACKWARD: 'backward (input grads + weights)',
  OPTIMIZER_STEP: 'optimizer', SEND: 'send', RECV: 'receive', ALLREDUCE: 'all-reduce',
};
const KIND_ORDER: Instruction['kind'][] = ['FORWARD', 'BACKWARD', 'BACKWARD_B', 'BACKWARD_W', 'OPTIMIZER_STEP', 'SEND', 'RECV', 'ALLREDUCE'];
const IDLE = '#f5f5f5';
/** Per virtual stage of a rank: 0 its kind's colour, then darker and lighter shades in turn. */
const SHADES = [0, -0.4, 0.45, -0.6, 0.65, -0.2, 0.25, 0.8];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const isComm = (k: Instruction['kind']) => k === 'SEND' || k === 'RECV' || k === 'ALLREDUCE';

/** `hex` mixed towards white (f > 0) or black (f < 0) by |f|. */
function shade(hex: string, f: number): string {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const m = c.map((v) => Math.round(f >= 0 ? v + (255 - v) * f : v * (1 + f)));
  return `#${m.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}
const light = (hex: string) => {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 0.2126 * r! + 0.7152 * g! + 0.0722 * b! > 0.6;
};

/**
 * A round step for a time axis over [0, span]: 1, 2, 2.5 or 5 × 10^k, the smallest giving at
 * most `most` intervals; with the decimals its labels need.
 */
export function axisStep(span: number, most = 10): { step: number; decimals: number } {
  const raw = (span > 0 ? span : 1) / most;
  const k = Math.floor(Math.log10(raw));
  for (const e of [k, k + 1]) {
    for (const m of [1, 2, 2.5, 5]) {
      const step = m * 10 ** e;
      if (step >= raw * (1 - 1e-9)) return { step, decimals: Math.max(0, -e + (m === 2.5 ? 1 : 0)) };
    }
  }
  return { step: 10 ** (k + 1), decimals: Math.max(0, -(k + 1)) };
}

/** The ticks of a time axis over [0, span]: round values from 0 to the first at or past `span`. */
export function axisTicks(span: number, most = 10): { values: number[]; decimals: number } {
  const { step, decimals } = axisStep(span, most);
  const n = Math.max(1, Math.ceil(span / step - 1e-9));
  return { values: [...Array(n + 1).keys()].map((i) => Number((i * step).toFixed(decimals))), decimals };
}

/** Each stage's virtual stage on its rank: its place among the rank's stages in model order. */
function virtualStages(plan: Plan): Map<number, number> {
  const out = new Map<number, number>();
  const byRank = new Map<number, number[]>();
  for (const s of plan.stages) byRank.set(s.ppRank, [...(byRank.get(s.ppRank) ?? []), s.index]);
  for (const list of byRank.values()) list.sort((a, b) => a - b).forEach((s, v) => out.set(s, v));
  return out;
}

const laneLabel = (r: Plan['ranks'][number]) => `rank ${r.rank} · pp ${r.ppRank} dp ${r.dpRank}`;

/**
 * The timeline as an SVG picture: one lane per rank (named by world rank and its pipeline and
 * data-parallel ranks), compute above, communication below, on a time axis with round ticks.
 * A rank's virtual stages are told apart by a shade of each kind's colour and the stage number in
 * each block (`s2`); a legend names the colours. With `measured` (`readMeasured`) the run's
 * timeline follows the predicted one as a second set of lanes on its own axis.
 */
export function planSvg(plan: Plan, measured?: MeasuredRun): string {
  const W = 1200, right = 32, lane = 44;
  const vOf = virtualStages(plan);
  const v = Math.max(1, plan.world.virtualStages, ...[...vOf.values()].map((x) => x + 1));
  const left = 16 + Math.ceil(Math.max(...plan.ranks.map((r) => laneLabel(r).length)) * 6.3);
  const fill = (ins: Instruction) => (isComm(ins.kind) || ins.stage < 0 || v === 1 ? COLORS[ins.kind] : shade(COLORS[ins.kind], SHADES[(vOf.get(ins.stage) ?? 0) % SHADES.length]!));
  const parts: string[] = [];
  let y = 0;
  const title = `${plan.model.name} — ${plan.schedule.name}, ${plan.world.pp} pipeline × ${plan.world.dp} data parallel${v > 1 ? `, ${v} stages per rank` : ''}`;
  parts.push(`<text x="8" y="20" font-size="13">${esc(title)}</text>`);
  y = 30;

  const panel = (p: Plan, timeline: 'predicted' | 'measured', heading: string) => {
    const span = p.prediction.stepMs || 1;
    const { values, decimals } = axisTicks(span);
    const end = values[values.length - 1]!;
    const x = (t: number) => left + (t / end) * (W - left - right);
    parts.push(`<text class="panel-title" data-timeline="${timeline}" x="8" y="${y + 16}" font-size="12">${esc(heading)}</text>`);
    const top = y + 26;
    p.ranks.forEach((r, k) => {
      const ly = top + k * lane;
      parts.push(`<g class="lane" data-timeline="${timeline}" data-rank="${r.rank}" data-pp="${r.ppRank}" data-dp="${r.dpRank}">`);
      parts.push(`<text class="lane-label" x="8" y="${ly + 18}">${esc(laneLabel(r))}</text>`);
      parts.push(`<rect x="${left}" y="${ly}" width="${W - left - right}" height="${lane - 6}" fill="${IDLE}"/>`);
      for (const ins of r.instructions) {
        const compute = !isComm(ins.kind);
        const x0 = x(ins.startMs), w = Math.max(0.5, x(ins.endMs) - x0);
        const yy = compute ? ly + 2 : ly + 26, h = compute ? 22 : 10;
        const vs = ins.stage >= 0 ? vOf.get(ins.stage) : undefined;
        const tip = `${ins.kind}${ins.stage >= 0 ? ` stage ${ins.stage}` : ''}${v > 1 && vs !== undefined ? ` (virtual stage ${vs})` : ''}${ins.mb >= 0 ? ` mb ${ins.mb}` : ''} ${ins.startMs.toFixed(3)}–${ins.endMs.toFixed(3)} ms`;
        const f = fill(ins);
        parts.push(`<rect class="block" data-kind="${ins.kind}" data-stage="${ins.stage}" data-mb="${ins.mb}"${vs !== undefined && compute ? ` data-virtual-stage="${vs}"` : ''} x="${x0.toFixed(2)}" y="${yy}" width="${w.toFixed(2)}" height="${h}" fill="${f}" stroke="white" stroke-width="0.5"><title>${esc(tip)}</title></rect>`);
        if (!compute || ins.mb < 0) continue;
        const ink = light(f) ? '#222' : 'white', cx = (x0 + w / 2).toFixed(2);
        const a = `${LABEL[ins.kind]}${ins.mb}`;
        if (v > 1) {
          // The microbatch over the stage number, so that narrow blocks name both.
          const b = `s${ins.stage}`;
          if (w >= 6 * Math.max(a.length, b.length) + 2) {
            parts.push(`<text class="block-label" x="${cx}" y="${yy + 10}" text-anchor="middle" font-size="10" fill="${ink}">${a}</text>`);
            parts.push(`<text class="block-stage" x="${cx}" y="${yy + 20}" text-anchor="middle" font-size="9" fill="${ink}">${b}</text>`);
          }
        } else if (w >= 6.5 * a.length + 4) {
          parts.push(`<text class="block-label" x="${cx}" y="${yy + 15}" text-anchor="middle" fill="${ink}">${a}</text>`);
        }
      }
      parts.push('</g>');
    });
    const bottom = top + p.ranks.length * lane;
    parts.push(`<g class="axis" data-timeline="${timeline}">`);
    for (const t of values) {
      const tx = x(t).toFixed(2);
      parts.push(`<line class="tick" data-ms="${t}" x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${bottom - 2}" stroke="#000" stroke-opacity="0.15"/>`);
      parts.push(`<text class="tick-label" data-ms="${t}" x="${tx}" y="${bottom + 10}" text-anchor="middle">${t.toFixed(decimals)} ms</text>`);
    }
    parts.push('</g>');
    y = bottom + 18;
  };

  panel(plan, 'predicted', `predicted (costed for ${plan.schedule.device}): step ${plan.prediction.stepMs.toFixed(3)} ms`);
  if (measured) {
    const on = measured.ranOn ? `, ran on ${measured.ranOn.backend === 'cpu' ? 'cpu' : measured.ranOn.device}` : '';
    y += 8;
    panel(measured, 'measured', `measured (one step${on}): step ${measured.prediction.stepMs.toFixed(3)} ms`);
  }

  // The legend: a swatch per colour drawn (each virtual stage's shade of a compute kind), and idle.
  const kinds = new Set([plan, ...(measured ? [measured] : [])].flatMap((p) => p.ranks.flatMap((r) => r.instructions.map((i) => i.kind))));
  const entries: { fill: string; text: string; kind: string; vs?: number }[] = [];
  for (const k of KIND_ORDER) {
    if (!kinds.has(k)) continue;
    if (v > 1 && !isComm(k) && k !== 'OPTIMIZER_STEP') {
      for (let s = 0; s < v; s++) entries.push({ fill: shade(COLORS[k], SHADES[s % SHADES.length]!), text: `${NAME[k]}, virtual stage ${s}`, kind: k, vs: s });
    } else entries.push({ fill: COLORS[k], text: NAME[k], kind: k });
  }
  entries.push({ fill: IDLE, text: 'idle', kind: 'idle' });
  parts.push(`<g class="legend">`);
  let lx = left, ly = y + 8;
  for (const e of entries) {
    const ew = 16 + Math.ceil(e.text.length * 6.3) + 18;
    if (lx + ew > W - right && lx > left) {
      lx = left;
      ly += 18;
    }
    parts.push(`<g class="legend-entry" data-kind="${e.kind}"${e.vs !== undefined ? ` data-virtual-stage="${e.vs}"` : ''}><rect x="${lx}" y="${ly}" width="12" height="12" fill="${e.fill}" stroke="#999" stroke-width="0.5"/><text x="${lx + 16}" y="${ly + 10}">${esc(e.text)}</text></g>`);
    lx += ew;
  }
  if (v > 1) {
    ly += 18;
    const ex = [...plan.stages].filter((s) => s.ppRank === 0).map((s) => s.index).sort((a, b) => a - b);
    parts.push(`<text class="legend-note" x="${left}" y="${ly + 10}">${esc(`virtual stage 0, 1, …: a rank's first, second, … stage in model order (pp rank 0 runs stages ${ex.join(', ')}); a compute block names its microbatch over its stage (F0 over s${ex[1] ?? ex[0] ?? 0})`)}</text>`);
  }
  parts.push('</g>');
  const H = ly + 24;
  const head = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<title>${esc(`${plan.model.name}: ${plan.schedule.name}, ${plan.world.pp}×${plan.world.dp} ranks, ${plan.schedule.microbatches} microbatches`)}</title>`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`,
  ];
  return [...head, ...parts, '</svg>'].join('\n') + '\n';
}

/**
 * Chrome / Perfetto trace events: a process per rank, a compute and a communication thread. A
 * measured plan (src/core/plan/measured.ts) writes the run's timeline, marked so that it reads back.
 */
export function planTrace(plan: Plan, measured = false): unknown {
  const events: unknown[] = [];
  for (const r of plan.ranks) {
    events.push({ name: 'process_name', ph: 'M', pid: r.rank, args: { name: `rank ${r.rank} (pp ${r.ppRank}, dp ${r.dpRank})` } });
    events.push({ name: 'thread_name', ph: 'M', pid: r.rank, tid: 0, args: { name: 'compute' } });
    events.push({ name: 'thread_name', ph: 'M', pid: r.rank, tid: 1, args: { name: 'communication' } });
    r.instructions.forEach((ins, i) => {
      const comm = ins.kind === 'SEND' || ins.kind === 'RECV' || ins.kind === 'ALLREDUCE';
      events.push({
        name: `${LABEL[ins.kind]}${ins.mb >= 0 ? ins.mb : ''}`, cat: ins.kind, ph: 'X', pid: r.rank, tid: comm ? 1 : 0,
        ts: ins.startMs * 1000, dur: Math.max(0, (ins.endMs - ins.startMs) * 1000),
        args: { index: i, stage: ins.stage, mb: ins.mb, tensor: ins.tensor, peer: ins.peer, bucket: ins.bucket },
      });
    });
  }
  return { traceEvents: events, displayTimeUnit: 'ms', metadata: { model: plan.model.name, schedule: plan.schedule.name, measured } };
}
