import { CleaveError } from '../../src/core/errors.js';
import type { Node, Value } from '../../src/core/ir/graph.js';
import type { Allocation, Instruction, Workspace } from '../../src/core/plan/types.js';
import type { OptimizerFamily } from '../cost/memory.js';
import { type ProgramKind, type Programs, valueBytes } from './programs.js';

/** First-fit placement of buffers that are live over index intervals; returns the arena size. */
export function packIntervals<T extends { bytes: number; first: number; last: number; offset: number }>(items: T[], align = 256): number {
  const order = [...items].sort((a, b) => b.bytes - a.bytes || a.first - b.first);
  const placed: T[] = [];
  let top = 0;
  for (const it of order) {
    const size = Math.ceil(it.bytes / align) * align;
    const busy = placed.filter((p) => p.first <= it.last && it.first <= p.last).sort((a, b) => a.offset - b.offset);
    let off = 0;
    for (const p of busy) {
      const pEnd = p.offset + Math.ceil(p.bytes / align) * align;
      if (off + size <= p.offset) break;
      off = Math.max(off, pEnd);
    }
    it.offset = off;
    placed.push(it);
    top = Math.max(top, off + size);
  }
  return top;
}

/**
 * A program's workspace: the values it produces and consumes itself, each live from its node to its
 * last reader inside the program, packed into one block. A view node's output (`isView`: Reshape
 * and friends) is the same memory as its input, so it gets no slot of its own: its readers extend
 * the lifetime of the value it aliases, and a value whose alias is read outside the program stays
 * outside the workspace with it.
 */
export function programWorkspace(nodes: readonly Node[], external: (v: Value) => boolean, index: (v: Value) => number, isView: (n: Node) => boolean = () => false): Workspace {
  const pos = new Map(nodes.map((n, i) => [n, i]));
  const rootOf = new Map<Value, Value>();
  const aliases = new Map<Value, Value[]>();
  for (const n of nodes) {
    if (!isView(n) || !n.inputs[0]) continue;
    const root = rootOf.get(n.inputs[0]) ?? n.inputs[0];
    rootOf.set(n.outputs[0]!, root);
    aliases.set(root, [...(aliases.get(root) ?? []), n.outputs[0]!]);
  }
  const items: { value: Value; bytes: number; first: number; last: number; offset: number }[] = [];
  nodes.forEach((n, i) => {
    n.outputs.forEach((o, k) => {
      if (k === 0 && rootOf.has(o)) return;
      const all = [o, ...(aliases.get(o) ?? [])];
      if (all.some(external)) return;
      let last = i;
      for (const a of all) for (const u of a.users) if (pos.has(u)) last = Math.max(last, pos.get(u)!);
      items.push({ value: o, bytes: valueBytes(o), first: i, last, offset: 0 });
    });
  });
  const bytes = packIntervals(items);
  return { bytes, slots: items.map((x) => ({ value: index(x.value), offset: x.offset, bytes: x.bytes })) };
}

const OPT_BYTES: Record<OptimizerFamily, number> = { sgd: 0, 'sgd-momentum': 4, adam: 8, adamw: 8 };

/**
 * One rank's static memory plan: parameters, gradient accumulators and optimizer state for the
 * whole step; per microbatch the activations a stage keeps for its backward (from forward to the
 * last backward), received tensors (from receive to last reader), tensors waiting to be sent, and
 * each program's workspace while it runs. Offsets come from packing these live ranges into one arena.
 */
export function rankMemory(progs: Programs, list: readonly Instruction[], workspaceBytes: (stage: number, prog: ProgramKind) => number, opt: OptimizerFamily, stagesOnRank: readonly number[]): { arenaBytes: number; allocations: Allocation[] } {
  const allocs: Allocation[] = [];
  const last = list.length - 1;
  const params = new Set<Value>();
  const gradParams = new Set<Value>();
  for (const k of stagesOnRank) {
    const s = progs.stages[k]!;
    for (const p of s.params) params.add(p);
    for (const g of s.grads) gradParams.add(g.param);
  }
  for (const p of params) allocs.push({ what: `param ${p.name}`, offset: 0, bytes: valueBytes(p), first: 0, last });
  for (const p of gradParams) {
    allocs.push({ what: `grad ${p.name}`, offset: 0, bytes: valueBytes(p), first: 0, last });
    if (OPT_BYTES[opt]) allocs.push({ what: `optimizer ${p.name}`, offset: 0, bytes: (valueBytes(p) / 4) * OPT_BYTES[opt], first: 0, last });
  }
  const where = new Map<string, number>();
  list.forEach((ins, i) => {
    const key = ins.kind === 'FORWARD' ? 'F' : ins.kind === 'BACKWARD_B' ? 'B' : ins.kind === 'BACKWARD_W' ? 'W' : ins.kind === 'BACKWARD' ? 'BW' : '';
    if (key) where.set(`${key}:${ins.stage}:${ins.mb}`, i);
  });
  const at = (kind: 'F' | 'B' | 'W', stage: number, mb: number): number | undefined =>
    kind === 'F' ? where.get(`F:${stage}:${mb}`) : where.get(`${kind}:${stage}:${mb}`) ?? where.get(`BW:${stage}:${mb}`);
  const programOf = progs.programOf;
  const stash = new Map<string, Allocation>();
  list.forEach((ins, i) => {
    if (ins.kind === 'FORWARD' || ins.kind === 'BACKWARD_B' || ins.kind === 'BACKWARD_W' || ins.kind === 'BACKWARD') {
      const progKinds: ProgramKind[] = ins.kind === 'FORWARD' ? ['forward'] : ins.kind === 'BACKWARD_B' ? ['backwardB'] : ins.kind === 'BACKWARD_W' ? ['backwardW'] : ['backwardB', 'backwardW'];
      const ws = Math.max(...progKinds.map((k) => workspaceBytes(ins.stage, k)));
      if (ws) allocs.push({ what: `workspace ${ins.kind} stage ${ins.stage} mb ${ins.mb}`, offset: 0, bytes: ws, first: i, last: i });
      // Values this work produces that later work of the same stage and microbatch reads: the stash.
      const s = progs.stages[ins.stage]!;
      for (const pk of progKinds) {
        for (const n of s[pk]) {
          for (const o of n.outputs) {
            const readers = o.users.filter((u) => progs.stageOf.get(u) === ins.stage && programOf.get(u) !== pk && !progKinds.includes(programOf.get(u)!));
            if (!readers.length) continue;
            const lastUse = Math.max(...readers.map((u) => at(programOf.get(u) === 'backwardW' ? 'W' : 'B', ins.stage, ins.mb) ?? i));
            // One block per (work, last reader): a stage's stash is a few buffers, not one per value.
            const key = `${i}:${Math.max(i, lastUse)}`;
            const blk = stash.get(key);
            if (blk) blk.bytes += valueBytes(o);
            else {
              const a: Allocation = { what: `stash stage ${ins.stage} mb ${ins.mb} (${ins.kind} → ${list[Math.max(i, lastUse)]!.kind})`, offset: 0, bytes: valueBytes(o), first: i, last: Math.max(i, lastUse) };
              stash.set(key, a);
              allocs.push(a);
            }
          }
        }
      }
    }
    if (ins.kind === 'RECV' || ins.kind === 'SEND') {
      const t = progs.boundaries[ins.tensor]!;
      if (ins.kind === 'RECV') {
        // Live until the last program on this stage that reads it.
        const readers = t.value.users.filter((u) => progs.stageOf.get(u) === t.to).map((u) => programOf.get(u)!);
        const lastUse = Math.max(i, ...readers.map((k) => at(k === 'forward' ? 'F' : k === 'backwardB' ? 'B' : 'W', t.to, ins.mb) ?? i));
        allocs.push({ what: `recv ${t.value.name} mb ${ins.mb}`, offset: 0, bytes: t.bytes, first: i, last: lastUse });
      } else {
        const producer = at(t.direction === 'activation' ? 'F' : 'B', t.from, ins.mb) ?? i;
        allocs.push({ what: `send ${t.value.name} mb ${ins.mb}`, offset: 0, bytes: t.bytes, first: Math.min(producer, i), last: i });
      }
    }
  });
  const arenaBytes = packIntervals(allocs);
  return { arenaBytes, allocations: allocs };
}

/** Checks a memory plan: buffers that are live at the same time never overlap in the arena. */
export function checkMemory(rank: number, allocs: readonly Allocation[], arenaBytes: number): void {
  const sorted = [...allocs].sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i]!;
    if (a.offset + a.bytes > arenaBytes) throw new CleaveError(`rank ${rank}: '${a.what}' ends past the arena (${a.offset + a.bytes} > ${arenaBytes} bytes)`);
    for (let j = i + 1; j < sorted.length && sorted[j]!.offset < a.offset + a.bytes; j++) {
      const b = sorted[j]!;
      if (a.first <= b.last && b.first <= a.last) throw new CleaveError(`rank ${rank}: '${a.what}' and '${b.what}' share arena bytes while both are live (instructions ${Math.max(a.first, b.first)}–${Math.min(a.last, b.last)})`);
    }
  }
}
