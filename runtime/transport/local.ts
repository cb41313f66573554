import { CleaveError } from '../../src/core/errors.js';
import type { Transport } from './transport.js';

/** The transport of a one-rank run: collectives over one rank are no-ops; there is no one to message. */
export class LocalTransport implements Transport {
  readonly rank = 0;
  readonly size = 1;
  send(peer: number): void {
    throw new CleaveError(`a one-rank run has no rank ${peer} to send to`);
  }
  recv(peer: number): Promise<ArrayBufferView> {
    return Promise.reject(new CleaveError(`a one-rank run has no rank ${peer} to receive from`));
  }
  async allreduce(ranks: readonly number[]): Promise<void> {
    if (ranks.some((r) => r !== 0)) throw new CleaveError('a one-rank run has no other ranks to reduce with');
  }
}
