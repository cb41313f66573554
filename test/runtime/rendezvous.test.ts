import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'cleave-rdzv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const url = (f: string) => JSON.stringify(pathToFileURL(resolve(f)).href);
// One process of a world: joins, prints what rank 0 shared, then leaves, dies or waits for a failure.
const script = join(dir, 'rank.mjs');
writeFileSync(script, `
import { rendezvous } from ${url('dist/runtime/launch/rendezvous.js')};
import { worldFromEnv } from ${url('dist/runtime/launch/world.js')};
import { ControlTransport } from ${url('dist/runtime/transport/control.js')};
const world = worldFromEnv(process.env);
const [mode, victim] = process.argv.slice(2);
try {
  const r = await rendezvous(world, () => new Uint8Array([7, 1, 9, world.worldSize]), Number(process.env.TIMEOUT_MS ?? 10000));
  console.log('shared ' + Buffer.from(r.shared).toString('hex'));
  if (mode === 'die' && world.rank === Number(victim)) process.exit(3);
  if (mode === 'ok') { r.close(); setTimeout(() => process.exit(0), 50); }
  else if (mode === 'stuck') {
    // Rank 1 waits for a host message rank 2 never sends: rank 2's death must end the wait.
    if (world.rank === 2) { setTimeout(() => process.exit(3), 300); await new Promise(() => {}); }
    const t = new ControlTransport(r);
    try { await t.recv(2, 'never'); } catch (e) { console.error('wait ended: ' + e.message); process.exit(1); }
  }
  else if (mode === 'talk') {
    // Host messages over the control plane: an all-reduce over everyone, and rank 1 → rank 2
    // (relayed by rank 0), then a message under the wrong tag.
    const t = new ControlTransport(r);
    const x = new Float64Array([world.rank + 1, 0.5]);
    await t.allreduce([...Array(world.worldSize).keys()], 'sum', x);
    console.log('sum ' + x.join(','));
    if (world.rank === 1) { t.send(2, 'hello', new Float32Array([1.5, -2])); t.send(2, 'oops', new Int32Array([3])); }
    if (world.rank === 2) {
      console.log('got ' + Array.from(await t.recv(1, 'hello')).join(','));
      try { await t.recv(1, 'hello'); } catch (e) { console.log('refused: ' + e.message); }
    }
    await t.allreduce([...Array(world.worldSize).keys()], 'done', new Float64Array(1));
    r.close(); setTimeout(() => process.exit(0), 50);
  }
  else {
    const f = await r.failure;
    console.error('rank ' + world.rank + ' stops: rank ' + f.rank + ': ' + f.message);
    process.exit(1);
  }
} catch (e) { console.error(e.message); process.exit(2); }
`);

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

interface Out { rank: number; code: number | null; stdout: string; stderr: string; ms: number }
async function world(size: number, args: string[], ranks = Array.from({ length: size }, (_, r) => r), extra: Record<string, string> = {}): Promise<Out[]> {
  const port = await freePort();
  const t0 = Date.now();
  return Promise.all(ranks.map((rank) => new Promise<Out>((res) => {
    const p = spawn(process.execPath, [script, ...args], { env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(size), LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), ...extra } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => res({ rank, code, stdout, stderr, ms: Date.now() - t0 }));
  })));
}

describe('the rendezvous over TCP', () => {
  it('gives every rank what rank 0 shared, whichever starts first', async () => {
    const out = await world(4, ['ok']);
    for (const o of out) {
      expect(o.code, o.stderr).toBe(0);
      expect(o.stdout.trim()).toBe('shared 07010904');
    }
  }, 30_000);

  it('carries the ranks\' host messages through rank 0: all-reduces, relayed sends, and a wrong tag refused', async () => {
    const out = await world(3, ['talk']);
    for (const o of out) {
      expect(o.code, o.stderr).toBe(0);
      expect(o.stdout).toMatch(/sum 6,1\.5/);
    }
    expect(out[2]!.stdout).toMatch(/got 1\.5,-2/);
    expect(out[2]!.stdout).toMatch(/refused: rank 2 expected 'hello' from rank 1 and got 'oops'/);
  }, 30_000);

  it('ends a wait for a host message when the sender dies, naming it', async () => {
    const out = await world(3, ['stuck']);
    expect(out[2]!.code).toBe(3);
    expect(out[1]!.code).toBe(1);
    expect(out[1]!.stderr).toMatch(/wait ended: rank 2 failed: rank 2 went away/);
  }, 30_000);

  it('stops every other rank within seconds when one dies, naming it', async () => {
    const out = await world(4, ['die', '2']);
    expect(out[2]!.code).toBe(3);
    for (const o of out.filter((x) => x.rank !== 2)) {
      expect(o.code).toBe(1);
      expect(o.stderr).toMatch(/stops: rank 2: rank 2 went away \(its process ended or lost its connection\)/);
      expect(o.ms).toBeLessThan(30_000);
    }
  }, 40_000);

  it('names the ranks that never joined, on rank 0 and on those that did', async () => {
    const out = await world(3, ['wait'], [0, 1], { TIMEOUT_MS: '1500' });
    for (const o of out) {
      expect(o.code).toBe(2);
      expect(o.stderr).toMatch(/rendezvous at 127\.0\.0\.1:\d+: rank 2 did not join within 1\.5 s/);
    }
  }, 30_000);
});
