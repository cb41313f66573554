/**
 * How ranks exchange tensors: point-to-point sends matched in order on each (sender, receiver)
 * channel, and collectives over a group. Implementations: shared memory between the worker threads
 * of one process (ports.ts); NCCL for GPUs later.
 */
export interface Transport {
  readonly rank: number;
  readonly size: number;
  /** Posts data for `peer`; resolves once handed over (the receiver may not have it yet). */
  send(peer: number, tag: string, data: Float64Array | Float32Array | Int32Array | Uint8Array): void;
  /** The next message from `peer`; it must carry `tag` (plans match sends to receives by order). */
  recv(peer: number, tag: string): Promise<ArrayBufferView>;
  /** Sums `data` elementwise over the group's ranks, in rank order (deterministic), in place. */
  allreduce(ranks: readonly number[], tag: string, data: Float64Array): Promise<void>;
}
