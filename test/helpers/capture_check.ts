// NCCL that moves no data, over the host emulation of the addon (host_cuda.ts), checking what CUDA
// checks when a stream capture forks onto other streams: work on a stream the capture has not
// reached would run at once rather than in the graph; every stream the capture forked onto must
// be joined back into the capturing stream after its last work before the capture ends
// (cudaErrorStreamCaptureUnjoined); a captured stream cannot wait for an event recorded outside the
// capture, and an event recorded inside it cannot be queried. For the structure of a multi-rank
// `--cuda-graph` capture; the numbers are not meaningful.
import type { NativeCuda } from '../../runtime/backends/cuda/native.js';
import type { HostCuda } from './host_cuda.js';

export function captureCheckedNccl(host: HostCuda): NativeCuda {
  const n = host.native;
  let capturing = false;
  let handles = 1000n;
  /** Streams in the capture, their work counted, and how much of it the capturing stream joined. */
  const captured = new Set<bigint>();
  const work = new Map<bigint, number>();
  const joined = new Map<bigint, number>();
  const recorded = new Map<bigint, { stream: bigint; at: number; inCapture: boolean }>();
  const enqueue = (s: bigint, what: string): void => {
    if (!capturing) return;
    if (!captured.has(s)) throw new Error(`${what} on stream ${s} during the capture, which has not forked onto it: it would run now, outside the graph`);
    work.set(s, (work.get(s) ?? 0) + 1);
  };
  const nccl: Record<string, (...a: never[]) => unknown> = {
    streamCreate: () => handles++,
    streamDestroy: () => undefined,
    ncclSplit: (_w: bigint, color: number) => (color < 0 ? 0n : handles++),
    ncclSend: (_c: bigint, _code: number, _p: bigint, _count: number, _peer: number, s: bigint) => enqueue(s, 'ncclSend'),
    ncclRecv: (_c: bigint, _code: number, _p: bigint, _count: number, _peer: number, s: bigint) => enqueue(s, 'ncclRecv'),
    ncclAllReduce: (_c: bigint, _code: number, _p: bigint, _count: number, s: bigint) => enqueue(s, 'ncclAllReduce'),
    ncclGroup: () => undefined,
    ncclAsyncError: () => null,
    ncclClose: () => undefined,
    graphBegin: (trim?: boolean) => {
      capturing = true;
      captured.clear();
      captured.add(0n);
      work.clear();
      joined.clear();
      n.graphBegin(trim);
    },
    graphEnd: () => {
      for (const s of captured) {
        if (s !== 0n && (joined.get(s) ?? 0) < (work.get(s) ?? 0)) throw new Error(`stream ${s} was forked into the capture and not joined back after its last work (cudaErrorStreamCaptureUnjoined)`);
      }
      capturing = false;
      return n.graphEnd();
    },
    eventRecord: (ev: bigint, s: bigint) => {
      const inCapture = capturing && captured.has(s);
      if (inCapture) enqueue(s, 'eventRecord');
      recorded.set(ev, { stream: s, at: work.get(s) ?? 0, inCapture });
      n.eventRecord(ev, s);
    },
    streamWait: (s: bigint, ev: bigint) => {
      const r = recorded.get(ev);
      if (capturing && r?.inCapture) {
        captured.add(s);
        if (s === 0n) joined.set(r.stream, Math.max(joined.get(r.stream) ?? 0, r.at));
      } else if (capturing && captured.has(s)) {
        throw new Error(`stream ${s} waits inside the capture for an event recorded outside it`);
      }
      n.streamWait(s, ev);
    },
    eventQuery: (ev: bigint) => {
      if (capturing && recorded.get(ev)?.inCapture) throw new Error('cudaEventQuery of an event recorded in the capture');
      return n.eventQuery(ev);
    },
  };
  return new Proxy(n, { get: (target, k) => nccl[String(k)] ?? Reflect.get(target, k) }) as NativeCuda;
}
