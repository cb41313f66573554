// CudaComm (runtime/backends/cuda/comm.ts) against a recording stand-in for the addon's NCCL,
// stream and event calls: which communicators each rank makes, in which order, and how transfers
// are ordered with the compute stream. (GPU runs are in test/gpu/multi_gpu.test.ts.)
import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { CudaComm } from '../../runtime/backends/cuda/comm.js';
import type { NativeCuda } from '../../runtime/backends/cuda/native.js';
import type { DeviceTensor } from '../../src/core/ops/registry.js';
import type { Plan } from '../../src/core/plan/types.js';
import { fixturePath } from '../helpers/fixtures.js';

/** Records every call; communicators and streams are numbered handles; events complete when told. */
function fakeNative(rank: number) {
  const calls: string[] = [];
  let next = 100n;
  const pending = new Set<bigint>();
  const done = new Set<bigint>();
  // While the communicator is built (its warm-up waits for its exchanges), events finish at once.
  const state = { instant: true };
  const n = {
    ncclSplit: (_w: bigint, color: number) => {
      calls.push(`split ${color}`);
      return color < 0 ? 0n : next++;
    },
    streamCreate: () => next++,
    eventCreate: () => next++,
    eventRecord: (ev: bigint, s: bigint) => {
      calls.push(`record ${ev} on ${s}`);
      if (!done.has(ev)) pending.add(ev);
    },
    streamWait: (s: bigint, ev: bigint) => void calls.push(`wait ${s} for ${ev}`),
    eventQuery: (ev: bigint) => state.instant || !pending.has(ev),
    ncclSend: (c: bigint, _code: number, p: bigint, count: number, peer: number, s: bigint) => void calls.push(`send ${p} ×${count} to ${peer} on comm ${c} stream ${s}`),
    ncclRecv: (c: bigint, _code: number, p: bigint, count: number, peer: number, s: bigint) => void calls.push(`recv ${p} ×${count} from ${peer} on comm ${c} stream ${s}`),
    ncclAllReduce: (c: bigint, _code: number, p: bigint, _count: number, s: bigint, avg: boolean) => void calls.push(`allreduce ${p} on comm ${c} stream ${s} ${avg ? 'avg' : 'sum'}`),
    ncclGroup: (start: boolean) => void calls.push(start ? 'group start' : 'group end'),
    ncclAsyncError: () => null,
    ncclClose: (c: bigint, abort: boolean) => void calls.push(`${abort ? 'abort' : 'close'} ${c}`),
    streamDestroy: () => undefined,
    eventDestroy: () => undefined,
    alloc: () => 1n << 32n,
    free: () => undefined,
  };
  return { n: n as unknown as NativeCuda, calls, rank, state, complete: (ev: bigint) => { pending.delete(ev); done.add(ev); } };
}

const plan2 = (dp = 1): Plan => compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, dp, microbatches: 2, schedule: '1f1b', batch: 4 }).plan;
/** Rank `rank` of plan2 on a fake whose events stay pending until completed, its set-up calls forgotten. */
function pending(rank: number) {
  const f = fakeNative(rank);
  const comm = new CudaComm(f.n, plan2(), rank, 1n);
  f.state.instant = false;
  f.calls.length = 0;
  return { f, comm };
}
const t = (ptr: bigint): DeviceTensor => ({ ptr, dtype: 'bfloat16', shape: [2, 8, 16] });

describe('CudaComm', () => {
  it('splits the same communicators in the same order on every rank, one per sending pair and per group', () => {
    const plan = plan2(2);
    const splits = plan.ranks.map((r) => {
      const f = fakeNative(r.rank);
      new CudaComm(f.n, plan, r.rank, 1n);
      return f.calls.filter((c) => c.startsWith('split')).length;
    });
    // Every rank makes every split call (a collective), members with color 0 and the rest with −1.
    const pairs = new Set(plan.ranks.flatMap((r) => r.instructions.filter((i) => i.kind === 'SEND').map((i) => `${r.rank}>${i.peer}`)));
    expect(new Set(splits)).toEqual(new Set([pairs.size + plan.groups.length]));
  });

  it('connects each of its pairs once before any step, exchanging a message as large as the pair\'s largest tensor', () => {
    const plan = plan2();
    const f = fakeNative(0);
    new CudaComm(f.n, plan, 0, 1n);
    const warm = f.calls.filter((c) => /^(send|recv) /.test(c));
    // Rank 0 sends to rank 1 and receives from it: two pair communicators, one exchange each way.
    expect(warm).toHaveLength(4);
    expect(warm.every((c) => c.includes('to 1') || c.includes('from 1'))).toBe(true);
    const bytes = (from: number, to: number): number => Math.max(...plan.ranks[from]!.instructions.filter((i) => i.kind === 'SEND' && i.peer === to)
      .map((i) => plan.values[plan.tensors[i.tensor]!.value]!.shape.reduce((a, b) => a * b, 1) * 4));
    // Both sides of a pair agree on its size: the pair 0>1 carries rank 0's activations, 1>0 the gradients back.
    expect(warm.slice(0, 2).map((c) => /×(\d+)/.exec(c)![1])).toEqual([String(bytes(0, 1)), String(bytes(0, 1))]);
    expect(warm.slice(2).map((c) => /×(\d+)/.exec(c)![1])).toEqual([String(bytes(1, 0)), String(bytes(1, 0))]);
  });

  it('connects each of its groups before any step with a one-element reduction, in plan order', () => {
    const plan = plan2(2);
    const f = fakeNative(0);
    new CudaComm(f.n, plan, 0, 1n);
    const mine = plan.groups.filter((g) => g.ranks.includes(0));
    expect(mine.length).toBeGreaterThan(0);
    expect(f.calls.filter((c) => c.startsWith('allreduce'))).toHaveLength(mine.length);
  });

  it('orders a send after the compute that made it, and holds its memory until the send is done, for every send of it', () => {
    const { f, comm } = pending(0);
    const x = t(5000n);
    comm.send(x, 1);
    comm.send(x, 1);
    const [rec, wait, send, done] = f.calls.slice(0, 4);
    expect(rec).toMatch(/^record \d+ on 0$/);
    expect(wait).toMatch(/^wait \d+ for \d+$/);
    expect(send).toMatch(/^send 5000 ×256 to 1 on comm \d+ stream \d+$/);
    expect(done).toMatch(/^record \d+ on \d+$/);
    // Compute never waited for the send.
    expect(f.calls.some((c) => c.startsWith('wait 0 '))).toBe(false);
    expect(comm.reading(5000n)).toBe(true);
    const events = f.calls.filter((c, i) => i % 4 === 3).map((c) => BigInt(c.split(' ')[1]!));
    f.complete(events[0]!);
    expect(comm.reading(5000n)).toBe(true); // the second send still reads it
    f.complete(events[1]!);
    expect(comm.reading(5000n)).toBe(false);
    expect(comm.reading(6000n)).toBe(false);
  });

  it('makes compute wait for a receive where it is first read, and drainSends makes it wait for sends still in flight', () => {
    const { f, comm } = pending(1);
    comm.recv(t(7000n), 0);
    expect(f.calls[2]).toMatch(/^recv 7000 ×256 from 0 on comm \d+ stream \d+$/);
    const arrived = f.calls.at(-1)!;
    expect(arrived).toMatch(/^record \d+ on \d+$/);
    // Nothing on the compute stream waits yet: a send queued now is not held up behind the receive.
    expect(f.calls.some((c) => c.startsWith('wait 0 '))).toBe(false);
    expect(comm.arrive(9000n)).toBe(false); // memory no receive wrote: nothing to wait for
    expect(f.calls.some((c) => c.startsWith('wait 0 '))).toBe(false);
    expect(comm.arrive(7000n)).toBe(true);
    expect(f.calls.at(-1)).toBe(`wait 0 for ${arrived.split(' ')[1]}`);
    expect(comm.arrive(7000n)).toBe(false); // once only
    expect(f.calls.filter((c) => c.startsWith('wait 0 '))).toHaveLength(1);
    f.calls.length = 0;
    comm.recv(t(7100n), 0);
    comm.drainSends(); // the start of a step: a receive nobody read is waited for too
    expect(f.calls.at(-1)).toMatch(/^wait 0 for \d+$/);
    f.calls.length = 0;
    comm.send(t(8000n), 0);
    // Sent this step, whether or not the send is done (launch lists hold such memory to the step's end).
    expect(comm.sent(8000n)).toBe(true);
    expect(comm.sent(7000n)).toBe(false);
    comm.drainSends();
    expect(comm.sent(8000n)).toBe(false);
    expect(f.calls.at(-1)).toMatch(/^wait 0 for \d+$/);
    expect(comm.reading(8000n)).toBe(false);
  });

  it('reduces a group\'s tensors as one NCCL group on its stream, and compute waits only at settle', () => {
    const plan = plan2(2);
    const r0 = plan.ranks.find((r) => r.rank === 0)!;
    const g = plan.groups.find((x) => x.ranks.includes(r0.rank))!;
    const f = fakeNative(0);
    const comm = new CudaComm(f.n, plan, 0, 1n);
    f.calls.length = 0;
    comm.allreduce(g.id, [t(1n << 20n), t(2n << 20n)], true);
    expect(f.calls.filter((c) => c.startsWith('allreduce')).every((c) => c.endsWith(' avg'))).toBe(true);
    expect(f.calls.indexOf('group start')).toBeLessThan(f.calls.indexOf('group end'));
    expect(f.calls.some((c) => c.startsWith('wait 0 '))).toBe(false);
    comm.settle();
    expect(f.calls.at(-1)).toMatch(/^wait 0 for \d+$/);
    expect(() => comm.allreduce(9999, [], false)).toThrow(/rank 0 has no communicator for group 9999/);
  });

  it('aborts or destroys every communicator, the world last', () => {
    const plan = plan2();
    const f = fakeNative(0);
    const comm = new CudaComm(f.n, plan, 0, 1n);
    f.calls.length = 0;
    comm.close(true);
    const closes = f.calls.filter((c) => c.startsWith('abort'));
    // Two pairs (to and from rank 1), the groups rank 0 is in, and the world.
    expect(closes.length).toBe(2 + plan.groups.filter((g) => g.ranks.includes(0)).length + 1);
    expect(closes.at(-1)).toBe('abort 1');
  });
});
