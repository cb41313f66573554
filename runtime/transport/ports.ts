import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { CleaveError } from '../../src/core/errors.js';
import type { Transport } from './transport.js';

interface Message { tag: string; kind: 'p2p' | 'coll'; buffer: SharedArrayBuffer; type: 'f64' | 'f32' | 'i32' | 'u8'; length: number }

const VIEW = {
  f64: Float64Array, f32: Float32Array, i32: Int32Array, u8: Uint8Array,
} as const;

/**
 * Shared-memory transport between the worker threads of one process. Each message's payload is
 * copied once into a SharedArrayBuffer that the receiver reads in place; MessagePorts carry the
 * reference, one port per pair of ranks, so each channel is FIFO. A receive that waits longer than
 * `timeoutMs` fails, naming both ranks, so a lost peer never hangs the run.
 */
export class PortTransport implements Transport {
  private readonly queues = new Map<string, Message[]>();
  /** Receives posted before their message arrived, in posting order (a channel is FIFO). */
  private readonly waiters = new Map<string, ((m: Message) => void)[]>();

  /** Receives waiting: while there are any, the ports keep the thread alive; otherwise it may exit. */
  private waiting = 0;

  /**
   * `othersBusy`: whether some rank's thread is stuck in its compute now. A wait that times out
   * meanwhile waits on: the message is late, not lost, and the run's watchdog bounds that rank's
   * compute and names it (this rank would name only the peer it waited for, or a bystander).
   */
  constructor(readonly rank: number, readonly size: number, private readonly ports: Map<number, MessagePort>, private readonly timeoutMs = 60_000, private readonly othersBusy?: () => boolean) {
    for (const [peer, port] of ports) {
      port.on('message', (m: Message) => {
        const key = this.key(peer, m.kind, m.tag);
        const w = this.waiters.get(key)?.shift();
        if (w) w(m);
        else {
          const q = this.queues.get(key) ?? [];
          q.push(m);
          this.queues.set(key, q);
        }
      });
      // After the listener: adding one refs the port again, which would keep a rank that never
      // receives (a script that stops before its first step) alive forever.
      port.unref();
    }
  }

  private post(peer: number, kind: Message['kind'], tag: string, data: ArrayBufferView & { length: number }): void {
    const port = this.ports.get(peer);
    if (!port) throw new CleaveError(`rank ${this.rank} has no channel to rank ${peer}`);
    const type = data instanceof Float64Array ? 'f64' : data instanceof Float32Array ? 'f32' : data instanceof Int32Array ? 'i32' : 'u8';
    const buffer = new SharedArrayBuffer(data.byteLength);
    new Uint8Array(buffer).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    port.postMessage({ tag, kind, buffer, type, length: data.length } satisfies Message);
  }

  /**
   * Point-to-point messages share one FIFO per peer (plans order them). Collectives overlap and
   * finish in any order, so each collective's messages have a mailbox of their own (by tag).
   */
  private key(peer: number, kind: Message['kind'], tag: string): string {
    return kind === 'p2p' ? `${peer}:p2p` : `${peer}:coll:${tag}`;
  }

  private take(peer: number, kind: Message['kind'], tag: string): Promise<ArrayBufferView> {
    const key = this.key(peer, kind, tag);
    const check = (m: Message): ArrayBufferView => {
      if (m.tag !== tag) throw new CleaveError(`rank ${this.rank} expected ${tag} from rank ${peer} but got ${m.tag}: the ranks disagree on the order of messages`);
      return new VIEW[m.type](m.buffer as unknown as ArrayBuffer, 0, m.length);
    };
    const q = this.queues.get(key);
    if (q?.length) return Promise.resolve(check(q.shift()!));
    this.hold(1);
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(key) ?? [];
      this.waiters.set(key, list);
      const waiter = (m: Message): void => {
        clearTimeout(timer);
        this.hold(-1);
        try {
          resolve(check(m));
        } catch (e) {
          reject(e);
        }
      };
      let timer: NodeJS.Timeout;
      const expire = (): void => {
        if (this.othersBusy?.()) {
          arm();
          return;
        }
        const k = list.indexOf(waiter);
        if (k >= 0) list.splice(k, 1);
        this.hold(-1);
        reject(new CleaveError(`rank ${this.rank} waited ${(this.timeoutMs / 1000).toFixed(0)} s for ${tag} from rank ${peer}, which never came`));
      };
      const arm = (): void => {
        timer = setTimeout(expire, this.timeoutMs);
        timer.unref?.();
      };
      arm();
      list.push(waiter);
    });
  }

  private hold(delta: number): void {
    const before = this.waiting;
    this.waiting += delta;
    if (before === 0 && this.waiting > 0) for (const p of this.ports.values()) p.ref();
    if (before > 0 && this.waiting === 0) for (const p of this.ports.values()) p.unref();
  }

  send(peer: number, tag: string, data: Float64Array | Float32Array | Int32Array | Uint8Array): void {
    this.post(peer, 'p2p', tag, data);
  }

  recv(peer: number, tag: string): Promise<ArrayBufferView> {
    return this.take(peer, 'p2p', tag);
  }

  /** The lowest rank gathers, sums in rank order, and sends the result back. */
  async allreduce(ranks: readonly number[], tag: string, data: Float64Array): Promise<void> {
    if (ranks.length <= 1) return;
    const leader = Math.min(...ranks);
    if (this.rank === leader) {
      const sum = Float64Array.from(data);
      // Post every receive at once: collectives overlap, and each channel must stay in order.
      const others = ranks.filter((r) => r !== leader);
      const got = await Promise.all(others.map((r) => this.take(r, 'coll', tag)));
      const parts = new Map(others.map((r, i) => [r, got[i] as Float64Array]));
      // Rank order: every run adds the same numbers in the same order.
      sum.set(data);
      for (const r of [...ranks].sort((a, b) => a - b)) {
        if (r === leader) continue;
        const p = parts.get(r)!;
        if (p.length !== sum.length) throw new CleaveError(`${tag}: rank ${r} contributes ${p.length} values, rank ${leader} ${sum.length}`);
        for (let i = 0; i < sum.length; i++) sum[i]! += p[i]!;
      }
      for (const r of ranks) if (r !== leader) this.post(r, 'coll', tag, sum);
      data.set(sum);
    } else {
      this.post(leader, 'coll', tag, data);
      data.set((await this.take(leader, 'coll', tag)) as Float64Array);
    }
  }
}

/** One MessageChannel per pair of ranks: entry r maps each peer of rank r to r's end of their channel. */
export function pairwisePorts(size: number): Record<number, MessagePort>[] {
  const ports: Record<number, MessagePort>[] = Array.from({ length: size }, () => ({}));
  for (let i = 0; i < size; i++) for (let j = i + 1; j < size; j++) {
    const ch = new MessageChannel();
    ports[i]![j] = ch.port1;
    ports[j]![i] = ch.port2;
  }
  return ports;
}
