// An in-process stand-in for NCCL between ranks whose addon is the host emulation (host_cuda.ts):
// the emulated kernels run as they are enqueued, so a send's data is ready when it is sent; a
// receive settles once its message arrived, and a reduction once every member of the group made
// the same call. Each pair of ranks is a FIFO, as a pair's communicator is.
import type { RankComm } from '../../runtime/backends/cuda/comm.js';
import type { NativeCuda } from '../../runtime/backends/cuda/native.js';
import type { DeviceTensor } from '../../src/core/ops/registry.js';
import type { Plan } from '../../src/core/plan/types.js';

const BYTES: Record<string, number> = { float32: 4, bfloat16: 2, float16: 2, int64: 8, int32: 4, bool: 1 };
const bytesOf = (t: DeviceTensor): number => t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype]!;

interface Round { members: Map<number, { n: NativeCuda; tensors: readonly DeviceTensor[]; average: boolean }>; done: Promise<void>; finish: () => void }

export class HostFabric {
  private readonly queues = new Map<string, ArrayBuffer[]>();
  private readonly waiting = new Map<string, ((b: ArrayBuffer) => void)[]>();
  private readonly rounds = new Map<number, Round[]>();
  private readonly calls = new Map<string, number>();

  constructor(readonly plan: Plan) {}

  /** Rank `rank`'s communication, over its emulated device `n`. */
  rank(rank: number, n: NativeCuda): RankComm {
    const pending: Promise<void>[] = [];
    // Sends here are done when made; what was sent is still held as NCCL's would be (launch lists).
    const sent = new Set<bigint>();
    return {
      send: (t, peer) => {
        sent.add(t.ptr);
        const key = `${rank}>${peer}`;
        const data = n.download(t.ptr, bytesOf(t));
        const w = this.waiting.get(key)?.shift();
        if (w) w(data);
        else this.queues.set(key, [...(this.queues.get(key) ?? []), data]);
      },
      recv: (t, peer) => new Promise<void>((resolve) => {
        const key = `${peer}>${rank}`;
        const deliver = (b: ArrayBuffer): void => {
          if (b.byteLength !== bytesOf(t)) throw new Error(`rank ${rank} expected ${bytesOf(t)} bytes from rank ${peer}, got ${b.byteLength}`);
          n.upload(t.ptr, new Uint8Array(b));
          resolve();
        };
        const q = this.queues.get(key)?.shift();
        if (q) deliver(q);
        else this.waiting.set(key, [...(this.waiting.get(key) ?? []), deliver]);
      }),
      arrive: () => false,
      reading: () => false,
      sent: (ptr) => sent.has(ptr),
      drainSends: () => sent.clear(),
      allreduce: (group, tensors, average) => {
        const g = this.plan.groups[group]!;
        const k = this.calls.get(`${group}:${rank}`) ?? 0;
        this.calls.set(`${group}:${rank}`, k + 1);
        const rounds = this.rounds.get(group) ?? [];
        this.rounds.set(group, rounds);
        let r = rounds[k];
        if (!r) {
          let finish = (): void => undefined;
          const done = new Promise<void>((res) => (finish = res));
          r = rounds[k] = { members: new Map(), done, finish };
        }
        r.members.set(rank, { n, tensors, average });
        if (r.members.size === g.ranks.length) this.reduce(r);
        pending.push(r.done);
        return r.done;
      },
      settle: async () => {
        await Promise.all(pending.splice(0));
      },
      asyncError: () => null,
      close: () => undefined,
    };
  }

  /** Sums each tensor position over the members (float32 accumulators), averaging where asked. */
  private reduce(r: Round): void {
    const members = [...r.members.values()];
    const count = members[0]!.tensors.length;
    for (let j = 0; j < count; j++) {
      const parts = members.map((m) => new Float32Array(m.n.download(m.tensors[j]!.ptr, bytesOf(m.tensors[j]!))));
      const sum = new Float32Array(parts[0]!.length);
      for (const p of parts) for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + p[i]!;
      if (members[0]!.average) for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! / members.length;
      for (const m of members) m.n.upload(m.tensors[j]!.ptr, sum);
    }
    r.finish();
  }
}
