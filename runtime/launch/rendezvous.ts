import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { CleaveError } from '../../src/core/errors.js';
import type { WorldEnv } from './world.js';

/**
 * The control plane of a multi-process run: every rank connects to rank 0 (MASTER_ADDR:PORT), rank
 * 0 hands each the bytes it shares (the NCCL unique id) once all have joined, and the connections
 * stay open so that a rank that fails — or dies, closing its socket without saying goodbye — is
 * reported to every other rank, naming it, instead of leaving them waiting on a collective.
 * Messages are lines of JSON.
 */
export interface Rendezvous {
  readonly rank: number;
  readonly worldSize: number;
  /** What rank 0 shared. */
  readonly shared: Uint8Array;
  /** Settles when another rank failed: its rank and why. Never rejects. */
  readonly failure: Promise<{ rank: number; message: string }>;
  /** Tells every rank that this one failed; settles once the message is handed to the network. */
  abort(message: string): Promise<void>;
  /** Leaves cleanly (others will not take the closed connection for a failure). */
  close(): void;
  /** Sends a few bytes to another rank (relayed by rank 0): the losses, the gradient norm. */
  post(to: number, tag: string, bytes: Uint8Array): void;
  /** The next bytes `from` posted to this rank; they must carry `tag`. */
  take(from: number, tag: string): Promise<Uint8Array>;
}

interface Data { from: number; to: number; tag: string; b64: string }
interface Msg { hello?: number; welcome?: string; abort?: { rank: number; message: string }; bye?: number; left?: number; data?: Data }

/** Messages that arrived before anyone asked for them, and receivers waiting for theirs, by sender. */
class Mailbox {
  private readonly queued = new Map<number, Data[]>();
  private readonly waiting = new Map<number, { tag: string; resolve: (b: Uint8Array) => void; reject: (e: Error) => void }[]>();
  /** Set once another rank failed: every wait, now or later, rejects with it. */
  private failed: Error | undefined;
  /** Ranks that left the run (closed cleanly): nothing more comes from them. */
  private readonly gone = new Set<number>();

  constructor(private readonly rank: number) {}

  private goneError(from: number, tag: string): CleaveError {
    return new CleaveError(`rank ${this.rank} waits for '${tag}' from rank ${from}, which has ended its run (it left early: were the ranks given the same steps?)`);
  }

  /** `rank` left: a wait for it, now or later, would never end; it fails, naming it. */
  depart(rank: number): void {
    this.gone.add(rank);
    for (const w of this.waiting.get(rank) ?? []) w.reject(this.goneError(rank, w.tag));
    this.waiting.delete(rank);
  }

  fail(e: Error): void {
    this.failed ??= e;
    for (const ws of this.waiting.values()) for (const w of ws) w.reject(this.failed);
    this.waiting.clear();
  }

  deliver(d: Data): void {
    const w = this.waiting.get(d.from)?.shift();
    if (w) this.hand(d, w);
    else this.queued.set(d.from, [...(this.queued.get(d.from) ?? []), d]);
  }

  take(from: number, tag: string): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      const d = this.queued.get(from)?.shift();
      if (d) this.hand(d, { tag, resolve, reject });
      else if (this.gone.has(from)) reject(this.goneError(from, tag));
      else this.waiting.set(from, [...(this.waiting.get(from) ?? []), { tag, resolve, reject }]);
    });
  }

  private hand(d: Data, w: { tag: string; resolve: (b: Uint8Array) => void; reject: (e: Error) => void }): void {
    if (d.tag !== w.tag) w.reject(new CleaveError(`rank ${this.rank} expected '${w.tag}' from rank ${d.from} and got '${d.tag}'`));
    else w.resolve(new Uint8Array(Buffer.from(d.b64, 'base64')));
  }
}

const data = (from: number, to: number, tag: string, bytes: Uint8Array): Data => ({ from, to, tag, b64: Buffer.from(bytes).toString('base64') });

function lines(socket: Socket, on: (m: Msg) => void): void {
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buf += chunk;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line) on(JSON.parse(line) as Msg);
    }
  });
}

/** Settles once everything written to these sockets so far has gone to the kernel. */
const flushed = (sockets: readonly Socket[]): Promise<void> =>
  Promise.all(sockets.map((s) => new Promise<void>((r) => (s.destroyed || !s.writable ? r() : s.write('', () => r()))))).then(() => undefined);

const send = (s: Socket, m: Msg): void => {
  if (!s.destroyed) s.write(JSON.stringify(m) + '\n');
};

/** Joins the world: rank 0 listens and shares `shared()`; the others connect (retrying until `timeoutMs`). */
export function rendezvous(world: WorldEnv, shared: () => Uint8Array, timeoutMs = 60_000): Promise<Rendezvous> {
  return world.rank === 0 ? host(world, shared(), timeoutMs) : join(world, timeoutMs);
}

function host(world: WorldEnv, blob: Uint8Array, timeoutMs: number): Promise<Rendezvous> {
  return new Promise((resolve, reject) => {
    const peers = new Map<number, Socket>();
    const left = new Set<number>();
    const box = new Mailbox(0);
    let report: (f: { rank: number; message: string }) => void = () => undefined;
    const failure = new Promise<{ rank: number; message: string }>((r) => (report = r));
    let done = false;
    // Tell everyone (but the failed rank) and settle this rank's own failure.
    const fail = (rank: number, message: string): void => {
      for (const [r, s] of peers) if (r !== rank) send(s, { abort: { rank, message } });
      box.fail(new CleaveError(`rank ${rank} failed: ${message}`));
      report({ rank, message });
    };
    const server: Server = createServer((socket) => {
      // Each step's few numbers are small writes in quick succession: Nagle's algorithm would hold
      // one back until the last is acknowledged (tens of ms a step with delayed ACKs).
      socket.setNoDelay(true);
      let who = -1;
      lines(socket, (m) => {
        if (m.hello !== undefined) {
          if (!Number.isInteger(m.hello) || m.hello < 1 || m.hello >= world.worldSize || peers.has(m.hello)) {
            send(socket, { abort: { rank: 0, message: `rank ${m.hello} cannot join a world of ${world.worldSize} (out of range or taken)` } });
            socket.end();
            return;
          }
          who = m.hello;
          peers.set(who, socket);
          if (peers.size === world.worldSize - 1) welcome();
        } else if (m.abort) fail(m.abort.rank, m.abort.message);
        else if (m.bye !== undefined) {
          // A rank done with its run: whoever still waits for it would wait forever.
          left.add(m.bye);
          box.depart(m.bye);
          for (const [r, s] of peers) if (r !== m.bye) send(s, { left: m.bye });
        }
        else if (m.data) {
          if (m.data.to === 0) box.deliver(m.data);
          else {
            const to = peers.get(m.data.to);
            if (to) send(to, { data: m.data });
          }
        }
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        if (who >= 0 && !left.has(who)) fail(who, `rank ${who} went away (its process ended or lost its connection)`);
      });
    });
    const timer = setTimeout(() => {
      if (done) return;
      const missing = Array.from({ length: world.worldSize - 1 }, (_, i) => i + 1).filter((r) => !peers.has(r));
      const message = `rendezvous at ${world.masterAddr}:${world.masterPort}: rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not join within ${timeoutMs / 1000} s`;
      for (const s of peers.values()) {
        send(s, { abort: { rank: 0, message } });
        s.end();
      }
      server.close();
      reject(new CleaveError(message));
    }, timeoutMs);
    const welcome = (): void => {
      done = true;
      clearTimeout(timer);
      const b64 = Buffer.from(blob).toString('base64');
      for (const s of peers.values()) send(s, { welcome: b64 });
      resolve({
        rank: 0, worldSize: world.worldSize, shared: blob, failure,
        abort: (message) => {
          fail(0, message);
          return flushed([...peers.values()]);
        },
        post: (to, tag, bytes) => {
          const d = data(0, to, tag, bytes);
          if (to === 0) box.deliver(d);
          else {
            const s = peers.get(to);
            if (!s) throw new CleaveError(`rank 0 has no connection to rank ${to}`);
            send(s, { data: d });
          }
        },
        take: (from, tag) => box.take(from, tag),
        close: () => {
          for (const s of peers.values()) s.end();
          server.close();
        },
      });
    };
    server.on('error', (e) => {
      clearTimeout(timer);
      reject(new CleaveError(`rank 0 cannot listen on ${world.masterAddr}:${world.masterPort}: ${e.message}`));
    });
    server.listen(world.masterPort, () => {
      if (world.worldSize === 1) welcome();
    });
  });
}

function join(world: WorldEnv, timeoutMs: number): Promise<Rendezvous> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const socket = createConnection({ host: world.masterAddr, port: world.masterPort, noDelay: true });
      let joined = false, leaving = false;
      const box = new Mailbox(world.rank);
      let report: (f: { rank: number; message: string }) => void = () => undefined;
      const failure = new Promise<{ rank: number; message: string }>((r) => (report = r));
      socket.once('connect', () => send(socket, { hello: world.rank }));
      socket.on('error', (e: NodeJS.ErrnoException) => {
        if (joined) return;
        socket.destroy();
        // Rank 0 may not listen yet: try again until the deadline.
        if ((e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') && Date.now() < deadline) setTimeout(attempt, 200);
        else reject(new CleaveError(`rank ${world.rank} cannot reach rank 0 at ${world.masterAddr}:${world.masterPort} within ${timeoutMs / 1000} s: ${e.message}`));
      });
      lines(socket, (m) => {
        if (m.welcome !== undefined && !joined) {
          joined = true;
          resolve({
            rank: world.rank, worldSize: world.worldSize, shared: new Uint8Array(Buffer.from(m.welcome, 'base64')), failure,
            abort: (message) => {
              send(socket, { abort: { rank: world.rank, message } });
              return flushed([socket]);
            },
            post: (to, tag, bytes) => {
              const d = data(world.rank, to, tag, bytes);
              if (to === world.rank) box.deliver(d);
              else send(socket, { data: d });
            },
            take: (from, tag) => box.take(from, tag),
            close: () => {
              leaving = true;
              send(socket, { bye: world.rank });
              socket.end();
            },
          });
        } else if (m.data) box.deliver(m.data);
        else if (m.left !== undefined) box.depart(m.left);
        else if (m.abort) {
          if (!joined) {
            socket.destroy();
            reject(new CleaveError(`rank ${world.rank}: ${m.abort.message}`));
          } else {
            box.fail(new CleaveError(`rank ${m.abort.rank} failed: ${m.abort.message}`));
            report(m.abort);
          }
        }
      });
      socket.on('close', () => {
        if (joined && !leaving) {
          box.fail(new CleaveError('rank 0 went away (its process ended or lost its connection)'));
          report({ rank: 0, message: 'rank 0 went away (its process ended or lost its connection)' });
        }
        else if (!joined && socket.bytesRead > 0) reject(new CleaveError(`rank ${world.rank}: rank 0 closed the rendezvous before every rank joined`));
      });
    };
    attempt();
  });
}
