import { CleaveError } from '../../../src/core/errors.js';
import { dtypeFromOnnx } from '../../../src/core/ir/dtype.js';
import type { DeviceTensor } from '../../../src/core/ops/registry.js';
import type { Plan } from '../../../src/core/plan/types.js';
import type { NativeCuda } from './native.js';

/** A communicator with its own stream, and the two events that order it with the compute stream. */
interface Channel { comm: bigint; stream: bigint; before: bigint; after: bigint }

/** NCCL element codes (native.ts): floats as themselves, anything else as bytes. */
const NCCL_CODE: Record<string, number> = { float32: 0, bfloat16: 1, float16: 2 };
const BYTES: Record<string, number> = { float32: 4, bfloat16: 2, float16: 2, int64: 8, int32: 4, bool: 1 };

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/**
 * What the CUDA rank backend needs of its communication: CudaComm over NCCL, or a stand-in (the
 * host emulation's in-process fabric, test/helpers/host_nccl.ts). Receives, reductions and settle
 * may return a promise that settles when the data is there (an emulation's delivery); over NCCL they
 * only enqueue.
 */
export interface RankComm {
  send(t: DeviceTensor, peer: number, mark?: readonly [bigint, bigint]): void;
  recv(t: DeviceTensor, peer: number, mark?: readonly [bigint, bigint]): void | Promise<void>;
  /** Compute queued from now on may read what was received at `ptr`; whether it had to wait. */
  arrive(ptr: bigint): boolean;
  reading(ptr: bigint): boolean;
  /** Whether memory at `ptr` was sent since the last `drainSends`, done or not. */
  sent(ptr: bigint): boolean;
  drainSends(): void;
  allreduce(group: number, tensors: readonly DeviceTensor[], average: boolean, mark?: readonly [bigint, bigint]): void | Promise<void>;
  settle(): void | Promise<void>;
  asyncError(): string | null;
  close(abort: boolean): void;
}

/**
 * One rank's NCCL communication for a multi-rank plan. From the world communicator it splits one
 * communicator per ordered pair of ranks that exchange boundary tensors, and one per group (data
 * parallel replicas, tied parameters) it belongs to, each with its own stream: every communicator
 * then carries one sender's sends to one receiver in plan order, so a send waiting for its receive
 * never holds up another pair, and transfers overlap compute. Compute never waits for a send; it
 * waits for a receive's data only where something first reads it (`arrive`), so work queued between
 * a receive and its reader, a send to another rank say, is not held up behind the transfer; memory a
 * send still reads is held back until the send is done.
 */
export class CudaComm implements RankComm {
  private readonly channels = new Map<string, Channel>();
  /** Sent tensors still in flight (a tensor may go to several ranks): memory not reused before their events. */
  private readonly inFlight = new Map<bigint, bigint[]>();
  private readonly spareEvents: bigint[] = [];
  /** Group channels with reductions the compute stream has not waited for yet. */
  private readonly pending = new Set<Channel>();
  /** Receives compute has not waited for yet: buffer address → the receive's event. */
  private readonly arrivals = new Map<bigint, bigint>();

  constructor(readonly n: NativeCuda, readonly plan: Plan, readonly rank: number, readonly world: bigint) {
    // Each split is a collective over the world: every rank makes the same calls in the same order.
    const pairs = new Set<string>();
    for (const r of plan.ranks) for (const ins of r.instructions) if (ins.kind === 'SEND') pairs.add(`${r.rank}>${ins.peer}`);
    const sorted = [...pairs].sort();
    for (const key of sorted) {
      const [a, b] = key.split('>').map(Number) as [number, number];
      const mine = rank === a || rank === b;
      const comm = n.ncclSplit(world, mine ? 0 : -1, rank);
      if (mine) this.channels.set(`pair ${key}`, this.channel(comm));
    }
    for (const g of plan.groups) {
      const mine = g.ranks.includes(rank);
      const comm = n.ncclSplit(world, mine ? 0 : -1, rank);
      if (mine) this.channels.set(`group ${g.id}`, this.channel(comm));
    }
    this.warmUp(sorted, CudaComm.largest(plan));
  }

  /** Bytes of the largest tensor each pair ("a>b") carries in the plan. */
  private static largest(plan: Plan): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of plan.ranks) {
      for (const ins of r.instructions) {
        if (ins.kind !== 'SEND') continue;
        const v = plan.values[plan.tensors[ins.tensor]!.value]!;
        // The plan's type is the widest the wire carries (float32 values go as 16 bits under bf16 compute).
        const bytes = numel(v.shape) * (BYTES[dtypeFromOnnx(v.dtype, v.name)] ?? 8);
        const key = `${r.rank}>${ins.peer}`;
        out.set(key, Math.max(out.get(key) ?? 0, bytes));
      }
    }
    return out;
  }

  /**
   * NCCL connects a pair's peers on first use, and that can block the host until the peer's host
   * gets there too: two ranks sending to each other first would wait for each other inside step 1.
   * So every pair exchanges a message as large as its largest tensor here (a small one may not set
   * up every channel a large one uses), the pairs taken in the same order on every rank, before any step.
   */
  private warmUp(pairs: readonly string[], largest: ReadonlyMap<string, number>): void {
    let most = 8;
    for (const key of pairs) if (this.channels.has(`pair ${key}`)) most = Math.max(most, largest.get(key) ?? 8);
    const send = this.n.alloc(most), recv = this.n.alloc(most);
    // Each exchange is waited for here: the constructor may block, since every rank is in it.
    const now = (ch: Channel, op: () => void): void => {
      this.enqueue(ch, undefined, op);
      this.n.eventRecord(ch.after, ch.stream);
      while (!this.n.eventQuery(ch.after)) { /* spin */ }
    };
    try {
      for (const key of pairs) {
        const ch = this.channels.get(`pair ${key}`);
        if (!ch) continue;
        const [a, b] = key.split('>').map(Number) as [number, number];
        const idx = this.peerIndex(this.rank === a ? b : a);
        // Both sides size the exchange by the pair's largest tensor, so they agree on it.
        const bytes = largest.get(key) ?? 8;
        now(ch, () => {
          this.n.ncclGroup(true);
          try {
            this.n.ncclSend(ch.comm, 3, send, bytes, idx, ch.stream);
            this.n.ncclRecv(ch.comm, 3, recv, bytes, idx, ch.stream);
          } finally {
            this.n.ncclGroup(false);
          }
        });
      }
      // Groups connect on their first reduction too: one element each, in plan order on every member.
      for (const g of this.plan.groups) {
        const ch = this.channels.get(`group ${g.id}`);
        if (ch) now(ch, () => this.n.ncclAllReduce(ch.comm, 0, send, 1, ch.stream, false));
      }
    } finally {
      this.n.free(send);
      this.n.free(recv);
    }
  }

  private channel(comm: bigint): Channel {
    return { comm, stream: this.n.streamCreate(), before: this.n.eventCreate(), after: this.n.eventCreate() };
  }

  private get(key: string): Channel {
    const ch = this.channels.get(key);
    if (!ch) throw new CleaveError(`rank ${this.rank} has no communicator for ${key}`);
    return ch;
  }

  /** The channel's stream starts after what the compute stream has queued so far. */
  private follow(ch: Channel): void {
    this.n.eventRecord(ch.before, 0n);
    this.n.streamWait(ch.stream, ch.before);
  }

  private static wire(t: DeviceTensor): [number, number] {
    const code = NCCL_CODE[t.dtype];
    if (code !== undefined) return [code, numel(t.shape)];
    const b = BYTES[t.dtype];
    if (b === undefined) throw new CleaveError(`cannot send a ${t.dtype} tensor`);
    return [3, numel(t.shape) * b];
  }

  /** Enqueues `op` on the channel's stream after the compute queued so far, between `mark`'s timing events. */
  private enqueue(ch: Channel, mark: readonly [bigint, bigint] | undefined, op: () => void): void {
    this.follow(ch);
    if (mark) this.n.eventRecord(mark[0], ch.stream);
    op();
    if (mark) this.n.eventRecord(mark[1], ch.stream);
  }

  /** `peer`'s index in the two-rank communicator of a pair (ranks split by world rank). */
  private peerIndex(peer: number): number {
    return peer < this.rank ? 0 : 1;
  }

  /** Sends `t` to world rank `peer` once the compute stream has produced it; `mark` times it (a trace). */
  send(t: DeviceTensor, peer: number, mark?: readonly [bigint, bigint]): void {
    const ch = this.get(`pair ${this.rank}>${peer}`);
    const [code, count] = CudaComm.wire(t);
    this.enqueue(ch, mark, () => this.n.ncclSend(ch.comm, code, t.ptr, count, this.peerIndex(peer), ch.stream));
    const done = this.spareEvents.pop() ?? this.n.eventCreate();
    this.n.eventRecord(done, ch.stream);
    // Another send of the same memory does not make compute wait for the first one.
    this.inFlight.set(t.ptr, [...(this.inFlight.get(t.ptr) ?? []), done]);
  }

  /** Receives into `t` from world rank `peer`; compute sees the data once `arrive(t.ptr)` is called. */
  recv(t: DeviceTensor, peer: number, mark?: readonly [bigint, bigint]): void {
    const ch = this.get(`pair ${peer}>${this.rank}`);
    const [code, count] = CudaComm.wire(t);
    // The buffer was just allocated on the compute stream: the receive starts after that.
    this.enqueue(ch, mark, () => this.n.ncclRecv(ch.comm, code, t.ptr, count, this.peerIndex(peer), ch.stream));
    const ev = this.spareEvents.pop() ?? this.n.eventCreate();
    this.n.eventRecord(ev, ch.stream);
    const old = this.arrivals.get(t.ptr);
    if (old !== undefined) this.release(old);
    this.arrivals.set(t.ptr, ev);
  }

  /** Compute queued from now on sees the data received at `ptr` (a no-op for any other memory). */
  arrive(ptr: bigint): boolean {
    const ev = this.arrivals.get(ptr);
    if (ev === undefined) return false;
    this.arrivals.delete(ptr);
    this.release(ev);
    return true;
  }

  sent(ptr: bigint): boolean {
    return this.inFlight.has(ptr);
  }

  /**
   * Whether a send may still read memory at `ptr` (the caller then holds the memory back). A
   * finished send is forgotten here, so the memory can go at once.
   */
  reading(ptr: bigint): boolean {
    const evs = this.inFlight.get(ptr);
    if (evs === undefined) return false;
    const pending = evs.filter((ev) => !this.n.eventQuery(ev));
    for (const ev of evs) if (!pending.includes(ev)) this.spareEvents.push(ev);
    if (pending.length) this.inFlight.set(ptr, pending);
    else this.inFlight.delete(ptr);
    return pending.length > 0;
  }

  /**
   * The compute stream waits for every send still in flight, which are then forgotten: memory they
   * read can be freed on the compute stream (the start of a step, the end of a run). It waits for
   * any receive not yet read too.
   */
  drainSends(): void {
    for (const evs of this.inFlight.values()) for (const ev of evs) this.release(ev);
    this.inFlight.clear();
    for (const ev of this.arrivals.values()) this.release(ev);
    this.arrivals.clear();
  }

  private release(ev: bigint): void {
    this.n.streamWait(0n, ev);
    this.spareEvents.push(ev);
  }

  /**
   * Sums (or averages) float32 tensors in place over a plan group, on the group's stream after the
   * compute queued so far; the compute stream waits for it at `settle`.
   */
  allreduce(group: number, tensors: readonly DeviceTensor[], average: boolean, mark?: readonly [bigint, bigint]): void {
    const ch = this.get(`group ${group}`);
    this.enqueue(ch, mark, () => {
      this.n.ncclGroup(true);
      try {
        for (const t of tensors) {
          const [code, count] = CudaComm.wire(t);
          this.n.ncclAllReduce(ch.comm, code, t.ptr, count, ch.stream, average);
        }
      } finally {
        this.n.ncclGroup(false);
      }
    });
    this.n.eventRecord(ch.after, ch.stream);
    this.pending.add(ch);
  }

  /** Compute waits for every reduction enqueued so far (before the optimizer reads gradients). */
  settle(): void {
    for (const ch of this.pending) this.n.streamWait(0n, ch.after);
    this.pending.clear();
  }

  /** NCCL's reason if a communicator failed in the background. */
  asyncError(): string | null {
    for (const [key, ch] of this.channels) {
      const e = this.n.ncclAsyncError(ch.comm);
      if (e) return `${key}: ${e}`;
    }
    return this.n.ncclAsyncError(this.world);
  }

  /** Destroys the communicators (or aborts them: a peer failed and pending work must be dropped). */
  close(abort: boolean): void {
    let first: unknown;
    const attempt = (f: () => void) => {
      try {
        f();
      } catch (e) {
        first ??= e;
      }
    };
    for (const ch of this.channels.values()) {
      attempt(() => this.n.ncclClose(ch.comm, abort));
      if (!abort) attempt(() => this.n.streamDestroy(ch.stream));
      attempt(() => this.n.eventDestroy(ch.before));
      attempt(() => this.n.eventDestroy(ch.after));
    }
    this.channels.clear();
    for (const ev of [...this.spareEvents, ...[...this.inFlight.values()].flat(), ...this.arrivals.values()]) attempt(() => this.n.eventDestroy(ev));
    this.spareEvents.length = 0;
    this.inFlight.clear();
    this.arrivals.clear();
    attempt(() => this.n.ncclClose(this.world, abort));
    if (first !== undefined) throw first;
  }
}
