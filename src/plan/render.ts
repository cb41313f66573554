import { formatShape } from '../ir/shape.js';
import { formatBytes, formatCount, table } from '../cli/format.js';
import type { Instruction, Plan } from './types.js';

const COMPUTE_CHAR: Partial<Record<Instruction['kind'], string>> = { FORWARD: 'F', BACKWARD_B: 'B', BACKWARD_W: 'W', BACKWARD: 'B', OPTIMIZER_STEP: 'O' };
const COMM_CHAR: Partial<Record<Instruction['kind'], string>> = { SEND: '>', RECV: '<', ALLREDUCE: 'A' };


/** A short description of one instruction, in the model's terms. */
export function describeInstruction(plan: Plan, ins: Instruction): string {
  const t = plan.tensors[ins.tensor];
  const val = t ? plan.values[t.value] : undefined;
  switch (ins.kind) {
    case 'SEND': return `${val?.name ?? '?'} (${t?.direction}, ${formatBytes(t?.bytes ?? 0)}) → rank ${ins.peer}`;
    case 'RECV': return `${val?.name ?? '?'} (${t?.direction}, ${formatBytes(t?.bytes ?? 0)}) ← rank ${ins.peer}`;
    case 'ALLREDUCE': {
      const b = plan.buckets[ins.bucket];
      const g = plan.groups[ins.group];
      return `bucket ${ins.bucket}: ${b?.params.length ?? 0} gradients, ${formatBytes(b?.bytes ?? 0)} over ${g?.kind} group [${g?.ranks.join(', ')}]`;
    }
    case 'OPTIMIZER_STEP': return `${plan.model.optimizer} update`;
    default: {
      const s = plan.stages[ins.stage];
      const nodes = !s ? [] : ins.kind === 'FORWARD' ? s.forward : ins.kind === 'BACKWARD_B' ? s.backwardB : ins.kind === 'BACKWARD_W' ? s.backwardW : [...s.backwardB, ...s.backwardW];
      return `${nodes.length} nodes`;
    }
  }
}

/** One lane per rank: compute on top, communication under it, time scaled to `width` columns. */
export function gantt(plan: Plan, width = 96): string {
  const span = plan.prediction.stepMs || 1;
  const col = (t: number) => Math.min(width - 1, Math.floor((t / span) * width));
  const lines: string[] = [];
  const label = `rank`.padEnd(8);
  lines.push(`${label}|${'0 ms'.padEnd(width - 12)}${`${span.toFixed(3)} ms`.padStart(12)}|`);
  for (const r of plan.ranks) {
    const top = new Array<string>(width).fill('.');
    const bottom = new Array<string>(width).fill(' ');
    for (const ins of r.instructions) {
      const a = col(ins.startMs), b = Math.max(a, col(ins.endMs) - (ins.endMs > ins.startMs && col(ins.endMs) > a ? 1 : 0));
      const c = COMPUTE_CHAR[ins.kind];
      if (c) {
        const text = ins.kind === 'OPTIMIZER_STEP' ? c : `${c}${ins.mb}`;
        for (let x = a; x <= b; x++) top[x] = x - a < text.length && b - a + 1 >= text.length ? text[x - a]! : c;
      } else if (COMM_CHAR[ins.kind]) {
        for (let x = a; x <= b; x++) if (bottom[x] === ' ' || ins.kind === 'ALLREDUCE') bottom[x] = COMM_CHAR[ins.kind]!;
      }
    }
    lines.push(`${`r${r.rank}`.padEnd(8)}|${top.join('')}|`);
    lines.push(`${''.padEnd(8)}|${bottom.join('')}|`);
  }
  lines.push(`${''.padEnd(8)} F forward  B backward (input grads${plan.schedule.split ? '' : ' + weights'})${plan.schedule.split ? '  W weight grads' : ''}  O optimizer  . idle   > send  < receive  A all-reduce`);
  return lines.join('\n');
}

export function renderPlan(plan: Plan, width = 96): string {
  const out: string[] = [];
  const w = plan.world;
  out.push(`plan ${plan.model.name} (${plan.model.source}), ${plan.producer}, format v${plan.version}`);
  out.push(`model     ${formatCount(plan.model.parameters)} parameters, opset ${plan.model.opset}, loss ${plan.model.loss}`);
  out.push(`world     ${w.size} ranks = ${w.pp} pipeline × ${w.dp} data parallel (${w.placement}), ${w.virtualStages} stage${w.virtualStages > 1 ? 's' : ''} per rank`);
  out.push(`schedule  ${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}${plan.schedule.activeMicrobatches ? `, at most ${plan.schedule.activeMicrobatches} active` : ''}; costs for ${plan.schedule.device}`);
  out.push(`dtypes    ${plan.model.dtypePolicy}, optimizer ${plan.model.optimizer}`);
  out.push('', 'stages');
  out.push(table(['stage', 'rank', 'F nodes', 'B nodes', 'W nodes', 'params', 'F ms', 'B ms', 'W ms', 'first → last node'], plan.stages.map((s) => {
    const first = plan.nodes[s.forward[0]!]?.name ?? '—', last = plan.nodes[s.forward[s.forward.length - 1]!]?.name ?? '—';
    const params = s.params.reduce((a, v) => a + plan.values[v]!.shape.reduce((x, y) => x * y, 1), 0);
    return [String(s.index), String(s.ppRank), String(s.forward.length), String(s.backwardB.length), String(s.backwardW.length), formatCount(params),
      s.fwdMs.toFixed(3), s.bMs.toFixed(3), s.wMs.toFixed(3), `${first} → ${last}`];
  })));
  if (plan.tensors.length) {
    out.push('', 'boundary tensors');
    out.push(table(['id', 'value', 'shape', 'from → to', 'direction', 'bytes'], plan.tensors.map((t) => {
      const v = plan.values[t.value]!;
      return [String(t.id), v.name, formatShape(v.shape), `${t.fromStage} → ${t.toStage}`, t.direction, formatBytes(t.bytes)];
    })));
  }
  out.push('', 'timeline (predicted)');
  out.push(gantt(plan, width));
  out.push('', table(['rank', 'pp', 'dp', 'instructions', 'bubble', 'peak memory'], plan.ranks.map((r) => [
    String(r.rank), String(r.ppRank), String(r.dpRank), String(r.instructions.length), `${(100 * r.bubble).toFixed(1)}%`, formatBytes(r.memory.arenaBytes),
  ])));
  out.push('', `predicted step ${plan.prediction.stepMs.toFixed(3)} ms (pipeline ${plan.prediction.pipelineMs.toFixed(3)} ms), bubble ${(100 * Math.max(...plan.ranks.map((r) => r.bubble))).toFixed(1)}% on the worst rank`);
  return out.join('\n') + '\n';
}

export function renderRank(plan: Plan, rank: number): string {
  const r = plan.ranks[rank]!;
  const head = `rank ${rank} (pipeline rank ${r.ppRank}, replica ${r.dpRank}): ${r.instructions.length} instructions, arena ${formatBytes(r.memory.arenaBytes)}`;
  const rows = r.instructions.map((ins, i) => [
    String(i), ins.kind, ins.stage >= 0 ? String(ins.stage) : '—', ins.mb >= 0 ? String(ins.mb) : '—',
    ins.startMs.toFixed(3), ins.endMs.toFixed(3), describeInstruction(plan, ins),
  ]);
  return `${head}\n${table(['#', 'kind', 'stage', 'mb', 'start ms', 'end ms', 'what'], rows)}\n`;
}
