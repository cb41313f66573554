import { isAbsolute, relative } from 'node:path';
import { formatShape } from '../ir/shape.js';
import { formatBytes, formatCount, table } from '../util/format.js';
import type { Instruction, Plan } from './types.js';

/** The narrowest output `cleave plan print` draws: below it the timeline has too few columns to read. */
export const MIN_WIDTH = 40;
/** The width when stdout is not a terminal (and `--width` is not given). */
export const DEFAULT_WIDTH = 96;

const COMPUTE_CHAR: Partial<Record<Instruction['kind'], string>> = { FORWARD: 'F', BACKWARD_B: 'B', BACKWARD_W: 'W', BACKWARD: 'B', OPTIMIZER_STEP: 'O' };
const COMM_CHAR: Partial<Record<Instruction['kind'], string>> = { SEND: '>', RECV: '<', ALLREDUCE: 'A' };
/** Left of each chart row: the rank's label; then `|`, the timeline, `|`. */
const LABEL_W = 8;

/**
 * Wraps `text` (words split at spaces) into lines of at most `width` characters: the first starts
 * with `first`, the rest with `rest`. A word longer than a line is cut, after a `,` `/` `-` `_` or
 * `→` near the end where it has one.
 */
export function wrap(text: string, width: number, first = '', rest = first): string[] {
  if (rest.length >= width) rest = '';
  const out: string[] = [];
  let cur = first, fresh = true;
  for (let word of text.split(' ').filter(Boolean)) {
    for (;;) {
      const sep = fresh ? '' : ' ';
      if (cur.length + sep.length + word.length <= width) {
        cur += sep + word;
        fresh = false;
        break;
      }
      if (!fresh) {
        out.push(cur);
        cur = rest;
        fresh = true;
        continue;
      }
      const room = Math.max(1, width - cur.length);
      let cut = room;
      for (let i = room; i > room / 2; i--) if (',/-_→'.includes(word[i - 1]!)) { cut = i; break; }
      out.push(cur + word.slice(0, cut));
      cur = rest;
      word = word.slice(cut);
      if (!word) break;
    }
  }
  if (!fresh || !out.length) out.push(cur);
  return out.map((l) => l.trimEnd());
}

/** A labelled header line (`model     …`), wrapped under its text. */
const labelled = (label: string, text: string, width: number, pad = 10): string[] => wrap(text, width, label.padEnd(pad), ' '.repeat(pad));

const NUMERIC = /^[-+]?[\d,.]+(\s?\S+)?%?$|^—$/;

/**
 * `table` (src/core/util/format.ts) made to fit `width` columns. As it is where it fits; otherwise the
 * widest text column (not the first) moves onto a line of its own under each row (wrapped), and
 * where the rest is still too wide its columns go in groups, one table each, every group led by
 * the first column (the key), the moved column under the first group's rows. Where even that
 * cannot fit, each row is written as one wrapped record.
 */
export function fitTable(header: readonly string[], rows: readonly (readonly string[])[], width: number, indent = '  '): string {
  const natural = table(header, rows, indent);
  if (natural.split('\n').every((l) => l.length <= width)) return natural;
  const n = header.length;
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => NUMERIC.test(r[c] ?? '')));
  const colW = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  let detail = -1;
  for (let c = 1; c < n; c++) if (!numeric[c] && (detail < 0 || colW[c]! > colW[detail]!)) detail = c;
  const body = [...Array(n).keys()].filter((c) => c !== detail);
  const lineW = (cols: readonly number[]) => indent.length + cols.reduce((a, c) => a + colW[c]!, 0) + 2 * (cols.length - 1);
  const groups: number[][] = [];
  let cur = [body[0]!];
  let fits = lineW(cur) <= width;
  for (const c of body.slice(1)) {
    if (lineW([...cur, c]) <= width) cur.push(c);
    else {
      groups.push(cur);
      cur = [body[0]!, c];
      if (lineW(cur) > width) fits = false;
    }
  }
  groups.push(cur);
  if (!fits) return records(header, rows, width, indent);
  const detailIndent = indent + '    ';
  const blocks = groups.map((g, gi) => {
    const lines = table(g.map((c) => header[c]!), rows.map((r) => g.map((c) => r[c] ?? '')), indent).split('\n');
    if (gi > 0 || detail < 0) return lines.join('\n');
    return lines.flatMap((l, i) => [l, ...wrap(i === 0 ? header[detail]! : rows[i - 1]![detail] ?? '', width, detailIndent)]).join('\n');
  });
  return blocks.join('\n\n');
}

/** Each row as `key value: header value, …`, wrapped. */
function records(header: readonly string[], rows: readonly (readonly string[])[], width: number, indent: string): string {
  return rows.map((r) => {
    const rest = header.slice(1).map((h, c) => `${h} ${r[c + 1] ?? ''}`).join(', ');
    return wrap(`${header[0]} ${r[0]}:${rest ? ` ${rest}` : ''}`, width, indent, indent + '    ').join('\n');
  }).join('\n');
}

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

/**
 * The legend of a chart: one entry per glyph it drew (`drawn`), the backward's meaning from the
 * kinds that drew `B`.
 */
function legendEntries(drawn: ReadonlySet<string>, kinds: ReadonlySet<Instruction['kind']>): string[] {
  const backward = kinds.has('BACKWARD') && kinds.has('BACKWARD_B') ? 'backward (input grads; + weights where no W follows)'
    : kinds.has('BACKWARD') ? 'backward (input grads + weights)' : 'backward (input grads)';
  const meaning: [string, string][] = [
    ['F', 'forward'], ['B', backward], ['W', 'weight grads'], ['O', 'optimizer'], ['.', 'idle'],
    ['>', 'send'], ['<', 'receive'], ['A', 'all-reduce'],
  ];
  const out = meaning.filter(([g]) => drawn.has(g)).map(([g, m]) => `${g} ${m}`);
  if ([...drawn].some((g) => /\d/.test(g))) out.push('0-9 microbatch (F3: forward of microbatch 3)');
  const known = new Set(meaning.map(([g]) => g));
  for (const g of drawn) if (!known.has(g) && !/[\d ]/.test(g)) out.push(`${g} ?`);
  return out;
}

/** Entries in lines of at most `width`, two spaces apart, each line starting with `prefix`. */
function flow(entries: readonly string[], width: number, prefix: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (const e of entries) {
    if (cur && prefix.length + cur.length + 2 + e.length <= width) cur += `  ${e}`;
    else {
      if (cur) out.push(prefix + cur);
      if (prefix.length + e.length <= width) cur = e;
      else {
        out.push(...wrap(e, width, prefix, prefix + '  '));
        cur = '';
      }
    }
  }
  if (cur) out.push(prefix + cur);
  return out;
}

/**
 * One lane per rank: compute on top, communication under it, time scaled so that every line,
 * the rank labels, the chart's borders and its legend included, fits in `width` columns
 * (at least MIN_WIDTH).
 */
export function gantt(plan: Plan, width = DEFAULT_WIDTH): string {
  const w = Math.max(MIN_WIDTH, Math.floor(width));
  const cols = w - LABEL_W - 2;
  const span = plan.prediction.stepMs || 1;
  const col = (t: number) => Math.min(cols - 1, Math.max(0, Math.floor((t / span) * cols)));
  const lines: string[] = [];
  const end = `${span.toFixed(3)} ms`;
  lines.push(`${'rank'.padEnd(LABEL_W)}|${'0 ms'.padEnd(Math.max(0, cols - end.length))}${end}|`);
  const drawn = new Set<string>();
  const kinds = new Set<Instruction['kind']>();
  for (const r of plan.ranks) {
    const top = new Array<string>(cols).fill('.');
    const bottom = new Array<string>(cols).fill(' ');
    for (const ins of r.instructions) {
      const a = col(ins.startMs), b = Math.max(a, col(ins.endMs) - (ins.endMs > ins.startMs && col(ins.endMs) > a ? 1 : 0));
      const c = COMPUTE_CHAR[ins.kind];
      if (c) {
        kinds.add(ins.kind);
        const text = ins.kind === 'OPTIMIZER_STEP' ? c : `${c}${ins.mb}`;
        for (let x = a; x <= b; x++) top[x] = x - a < text.length && b - a + 1 >= text.length ? text[x - a]! : c;
      } else if (COMM_CHAR[ins.kind]) {
        for (let x = a; x <= b; x++) if (bottom[x] === ' ' || ins.kind === 'ALLREDUCE') bottom[x] = COMM_CHAR[ins.kind]!;
      }
    }
    for (const g of [...top, ...bottom]) drawn.add(g);
    lines.push(`${`r${r.rank}`.padEnd(LABEL_W).slice(0, LABEL_W)}|${top.join('')}|`);
    lines.push(`${''.padEnd(LABEL_W)}|${bottom.join('')}|`);
  }
  lines.push(...flow(legendEntries(drawn, kinds), w, ' '.repeat(LABEL_W + 1)));
  return lines.join('\n');
}

/** A path as the reader would type it here: relative to the working directory where it is inside it. */
function shownPath(file: string): string {
  if (!isAbsolute(file)) return file;
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

/** Where the plan's parameters and states are read from: byte ranges per file, and what is read by name. */
function weightsLine(plan: Plan): string {
  const held = plan.values.filter((v) => v.kind === 'param' || v.kind === 'state');
  const files = new Map<string, { n: number; bytes: number }>();
  let byName = 0, none = 0;
  for (const v of held) {
    if (!v.weight && plan.version >= 6) { none++; continue; }
    if (v.weight?.kind !== 'bytes') { byName++; continue; }
    const f = files.get(v.weight.file) ?? { n: 0, bytes: 0 };
    files.set(v.weight.file, { n: f.n + 1, bytes: f.bytes + v.weight.length });
  }
  const model = plan.model.source.split(/[\\/]/).at(-1)!;
  const parts = [...files].map(([f, x]) => `${x.n} by byte range from ${f || model} (${formatBytes(x.bytes)}, SHA-256 checked)`);
  if (byName) parts.push(`${byName} by initializer name${plan.version < 6 ? ' (a plan before weight references)' : ''}`);
  if (none) parts.push(`${none} not referenced (compiled from a graph in memory: the caller gives them)`);
  return parts.length ? parts.join(', ') : 'none (the model has no parameters)';
}

/** The plan as `cleave plan print` shows it, every line at most `width` (≥ MIN_WIDTH) columns. */
export function renderPlan(plan: Plan, width = DEFAULT_WIDTH): string {
  const W = Math.max(MIN_WIDTH, Math.floor(width));
  const out: string[] = [];
  const w = plan.world;
  out.push(...wrap(`plan ${plan.model.name} (${shownPath(plan.model.source)}), ${plan.producer}, format v${plan.version} (${plan.checksum ? 'checksum verified' : 'no checksum: written before plans carried one'})`, W, '', '     '));
  out.push(...labelled('model', `${formatCount(plan.model.parameters)} parameters, opset ${plan.model.opset}, loss ${plan.model.loss}`, W));
  out.push(...labelled('world', `${w.size} ranks = ${w.pp} pipeline × ${w.dp} data parallel (${w.placement}), ${w.virtualStages} stage${w.virtualStages > 1 ? 's' : ''} per rank`, W));
  out.push(...labelled('schedule', `${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}${plan.schedule.activeMicrobatches ? `, at most ${plan.schedule.activeMicrobatches} active` : ''}; costs for ${plan.schedule.device}`, W));
  out.push(...labelled('dtypes', `${plan.model.dtypePolicy}, optimizer ${plan.model.optimizer}`, W));
  out.push(...labelled('weights', weightsLine(plan), W));
  out.push('', 'stages');
  out.push(fitTable(['stage', 'rank', 'F nodes', 'B nodes', 'W nodes', 'params', 'F ms', 'B ms', 'W ms', 'first → last node'], plan.stages.map((s) => {
    const first = plan.nodes[s.forward[0]!]?.name ?? '—', last = plan.nodes[s.forward[s.forward.length - 1]!]?.name ?? '—';
    const params = s.params.reduce((a, v) => a + plan.values[v]!.shape.reduce((x, y) => x * y, 1), 0);
    return [String(s.index), String(s.ppRank), String(s.forward.length), String(s.backwardB.length), String(s.backwardW.length), formatCount(params),
      s.fwdMs.toFixed(3), s.bMs.toFixed(3), s.wMs.toFixed(3), `${first} → ${last}`];
  }), W));
  if (plan.tensors.length) {
    out.push('', 'boundary tensors');
    out.push(fitTable(['id', 'value', 'shape', 'from → to', 'direction', 'bytes'], plan.tensors.map((t) => {
      const v = plan.values[t.value]!;
      return [String(t.id), v.name, formatShape(v.shape), `${t.fromStage} → ${t.toStage}`, t.direction, formatBytes(t.bytes)];
    }), W));
  }
  out.push('', 'timeline (predicted)');
  out.push(gantt(plan, W));
  out.push('', fitTable(['rank', 'pp', 'dp', 'instructions', 'bubble', 'peak memory'], plan.ranks.map((r) => [
    String(r.rank), String(r.ppRank), String(r.dpRank), String(r.instructions.length), `${(100 * r.bubble).toFixed(1)}%`, formatBytes(r.memory.arenaBytes),
  ]), W));
  out.push('', ...wrap(`predicted step ${plan.prediction.stepMs.toFixed(3)} ms (pipeline ${plan.prediction.pipelineMs.toFixed(3)} ms), bubble ${(100 * Math.max(...plan.ranks.map((r) => r.bubble))).toFixed(1)}% on the worst rank`, W));
  return out.join('\n') + '\n';
}

/** One rank's instructions, every line at most `width` (≥ MIN_WIDTH) columns. */
export function renderRank(plan: Plan, rank: number, width = DEFAULT_WIDTH): string {
  const W = Math.max(MIN_WIDTH, Math.floor(width));
  const r = plan.ranks[rank]!;
  const head = wrap(`rank ${rank} (pipeline rank ${r.ppRank}, replica ${r.dpRank}): ${r.instructions.length} instructions, arena ${formatBytes(r.memory.arenaBytes)}`, W, '', '  ');
  const rows = r.instructions.map((ins, i) => [
    String(i), ins.kind, ins.stage >= 0 ? String(ins.stage) : '—', ins.mb >= 0 ? String(ins.mb) : '—',
    ins.startMs.toFixed(3), ins.endMs.toFixed(3), describeInstruction(plan, ins),
  ]);
  return `${head.join('\n')}\n${fitTable(['#', 'kind', 'stage', 'mb', 'start ms', 'end ms', 'what'], rows, W)}\n`;
}
