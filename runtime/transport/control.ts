import { CleaveError } from '../../src/core/errors.js';
import type { Rendezvous } from '../launch/rendezvous.js';
import type { Transport } from './transport.js';

type Payload = Float64Array | Float32Array | Int32Array | Uint8Array;
const KINDS = [Float64Array, Float32Array, Int32Array, Uint8Array] as const;

/**
 * Host messages between the processes of a multi-GPU run, over the rendezvous' control plane (a
 * star through rank 0): only the few numbers the ranks share each step go this way (the losses, the
 * gradient norm); tensors go through NCCL.
 */
export class ControlTransport implements Transport {
  readonly rank: number;
  readonly size: number;

  constructor(private readonly rv: Rendezvous) {
    this.rank = rv.rank;
    this.size = rv.worldSize;
  }

  send(peer: number, tag: string, data: Payload): void {
    const kind = KINDS.findIndex((k) => data instanceof k);
    if (kind < 0) throw new CleaveError(`the control transport cannot send a ${data.constructor.name}`);
    const body = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const bytes = new Uint8Array(1 + body.length);
    bytes[0] = kind;
    bytes.set(body, 1);
    this.rv.post(peer, tag, bytes);
  }

  async recv(peer: number, tag: string): Promise<ArrayBufferView> {
    const bytes = await this.rv.take(peer, tag);
    const Kind = KINDS[bytes[0]!];
    if (!Kind) throw new CleaveError(`rank ${this.rank}: a message from rank ${peer} has an unknown element type ${bytes[0]}`);
    const body = bytes.slice(1);
    return new Kind(body.buffer, 0, body.byteLength / Kind.BYTES_PER_ELEMENT);
  }

  /** The group's lowest rank adds the others' data in rank order and sends the sum back. */
  async allreduce(ranks: readonly number[], tag: string, data: Float64Array): Promise<void> {
    const group = [...ranks].sort((a, b) => a - b);
    if (!group.includes(this.rank)) throw new CleaveError(`rank ${this.rank} is not in the group ${group.join(', ')} of '${tag}'`);
    const root = group[0]!;
    if (this.rank === root) {
      for (const r of group.slice(1)) {
        const x = (await this.recv(r, tag)) as Float64Array;
        for (let i = 0; i < data.length; i++) data[i] = data[i]! + x[i]!;
      }
      for (const r of group.slice(1)) this.send(r, tag, data);
    } else {
      this.send(root, tag, data);
      data.set((await this.recv(root, tag)) as Float64Array);
    }
  }
}
