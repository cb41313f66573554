import type { Instruction, Plan } from './types.js';

const COLORS: Record<Instruction['kind'], string> = {
  FORWARD: '#4e79a7', BACKWARD_B: '#f28e2b', BACKWARD_W: '#59a14f', BACKWARD: '#f28e2b', OPTIMIZER_STEP: '#b07aa1',
  SEND: '#9c755f', RECV: '#bab0ac', ALLREDUCE: '#e15759',
};
const LABEL: Record<Instruction['kind'], string> = {
  FORWARD: 'F', BACKWARD_B: 'B', BACKWARD_W: 'W', BACKWARD: 'B', OPTIMIZER_STEP: 'O', SEND: 'send', RECV: 'recv', ALLREDUCE: 'all-reduce',
};

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The predicted timeline as an SVG picture: one lane per rank, compute above, communication below. */
export function planSvg(plan: Plan): string {
  const W = 1200, left = 70, right = 20, lane = 44, top = 40;
  const span = plan.prediction.stepMs || 1;
  const x = (t: number) => left + (t / span) * (W - left - right);
  const H = top + plan.ranks.length * lane + 50;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<title>${esc(`${plan.model.name}: ${plan.schedule.name}, ${plan.world.pp}×${plan.world.dp} ranks, ${plan.schedule.microbatches} microbatches`)}</title>`);
  parts.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${left}" y="20" font-size="13">${esc(`${plan.model.name} — ${plan.schedule.name}, predicted step ${plan.prediction.stepMs.toFixed(3)} ms`)}</text>`);
  plan.ranks.forEach((r, k) => {
    const y = top + k * lane;
    parts.push(`<g class="lane" data-rank="${r.rank}">`);
    parts.push(`<text x="8" y="${y + 18}">rank ${r.rank}</text>`);
    parts.push(`<rect x="${left}" y="${y}" width="${W - left - right}" height="${lane - 6}" fill="#f5f5f5"/>`);
    for (const ins of r.instructions) {
      const compute = ins.kind !== 'SEND' && ins.kind !== 'RECV' && ins.kind !== 'ALLREDUCE';
      const x0 = x(ins.startMs), w = Math.max(0.5, x(ins.endMs) - x0);
      const yy = compute ? y + 2 : y + 26, h = compute ? 22 : 10;
      const tip = `${ins.kind}${ins.stage >= 0 ? ` stage ${ins.stage}` : ''}${ins.mb >= 0 ? ` mb ${ins.mb}` : ''} ${ins.startMs.toFixed(3)}–${ins.endMs.toFixed(3)} ms`;
      parts.push(`<rect x="${x0.toFixed(2)}" y="${yy}" width="${w.toFixed(2)}" height="${h}" fill="${COLORS[ins.kind]}" stroke="white" stroke-width="0.5"><title>${esc(tip)}</title></rect>`);
      if (compute && w > 16 && ins.mb >= 0) parts.push(`<text x="${(x0 + w / 2).toFixed(2)}" y="${yy + 15}" text-anchor="middle" fill="white">${LABEL[ins.kind]}${ins.mb}</text>`);
    }
    parts.push('</g>');
  });
  const axisY = top + plan.ranks.length * lane + 12;
  for (let i = 0; i <= 10; i++) {
    const t = (span * i) / 10;
    parts.push(`<line x1="${x(t).toFixed(2)}" y1="${top - 4}" x2="${x(t).toFixed(2)}" y2="${axisY - 8}" stroke="#ddd"/>`);
    parts.push(`<text x="${x(t).toFixed(2)}" y="${axisY + 4}" text-anchor="middle">${t.toFixed(2)} ms</text>`);
  }
  const legend: Instruction['kind'][] = plan.schedule.split ? ['FORWARD', 'BACKWARD_B', 'BACKWARD_W', 'SEND', 'RECV', 'ALLREDUCE', 'OPTIMIZER_STEP'] : ['FORWARD', 'BACKWARD', 'SEND', 'RECV', 'ALLREDUCE', 'OPTIMIZER_STEP'];
  legend.forEach((k, i) => {
    const lx = left + i * 150;
    parts.push(`<rect x="${lx}" y="${axisY + 16}" width="12" height="12" fill="${COLORS[k]}"/><text x="${lx + 16}" y="${axisY + 26}">${esc(k.toLowerCase().replace('_', ' '))}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/**
 * Chrome / Perfetto trace events: a process per rank, a compute and a communication thread. A
 * measured plan (src/plan/measured.ts) writes the run's timeline, marked so that it reads back.
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
