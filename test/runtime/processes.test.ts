import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { launchProcesses } from '../../runtime/launch/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-launch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// A rank: says who it is, then exits, fails (rank FAIL), or waits until it is stopped.
const script = join(dir, 'rank.mjs');
writeFileSync(script, `
const rank = Number(process.env.RANK);
console.log('rank ' + rank + ' of ' + process.env.WORLD_SIZE + ', local ' + process.env.LOCAL_RANK + ', master ' + process.env.MASTER_ADDR + ':' + process.env.MASTER_PORT);
if (process.argv[2] === 'fail' && rank === 2) { console.error('rank 2 breaks'); process.exit(7); }
if (process.argv[2] === 'hang') setInterval(() => {}, 1000);
else if (process.argv[2] === 'fail') setInterval(() => {}, 1000);
`);

describe('launching one process per rank', () => {
  it('gives each its torchrun variables and its own log, and shows rank 0', async () => {
    let shown = '';
    const r = await launchProcesses({ nprocs: 3, masterPort: 29511, command: process.execPath, args: [script, 'ok'], logDir: join(dir, 'ok'), echo: (c) => (shown += c) });
    expect(r.codes).toEqual([0, 0, 0]);
    r.logs.forEach((f, k) => expect(readFileSync(f, 'utf8')).toBe(`rank ${k} of 3, local ${k}, master 127.0.0.1:29511\n`));
    expect(shown).toBe('rank 0 of 3, local 0, master 127.0.0.1:29511\n');
  });

  it('stops every other rank when one fails, naming it and its log, leaving no process behind', async () => {
    const t0 = Date.now();
    await expect(launchProcesses({ nprocs: 4, masterPort: 29512, command: process.execPath, args: [script, 'fail'], logDir: join(dir, 'fail'), echo: () => undefined, graceMs: 2000 }))
      .rejects.toThrow(/rank 2 exited with code 7; the other ranks were stopped \(its log: .*rank-2\.log\)/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(readFileSync(join(dir, 'fail', 'rank-2.log'), 'utf8')).toMatch(/rank 2 breaks/);
  });

  it('kills a rank that ignores the request to stop, after the grace period', async () => {
    const stubborn = join(dir, 'stubborn.mjs');
    writeFileSync(stubborn, `process.on('SIGTERM', () => {}); if (process.env.RANK === '1') process.exit(1); setInterval(() => {}, 1000);`);
    const t0 = Date.now();
    await expect(launchProcesses({ nprocs: 2, masterPort: 29513, command: process.execPath, args: [stubborn], logDir: join(dir, 'stubborn'), echo: () => undefined, graceMs: 500 }))
      .rejects.toThrow(/rank 1 exited with code 1/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('names a rank whose program cannot start', async () => {
    await expect(launchProcesses({ nprocs: 2, masterPort: 29514, command: join(dir, 'no-such-program'), args: [], logDir: join(dir, 'missing'), echo: () => undefined, graceMs: 200 }))
      .rejects.toThrow(/rank 0 could not start: spawn .*no-such-program ENOENT/);
  });

  it('refuses worlds that do not add up', () => {
    expect(() => launchProcesses({ nprocs: 0, masterPort: 1, command: 'x', args: [], logDir: dir })).toThrow(/the number of processes must be a positive integer, got 0/);
    expect(() => launchProcesses({ nprocs: 4, worldSize: 6, firstRank: 4, masterPort: 1, command: 'x', args: [], logDir: dir })).toThrow(/ranks 4…7 do not fit a world of 6/);
  });
});

// A rank's process that ends with code 0 has finished only if it says so: cleave's ranks write
// 'started' then 'done' to the file launchProcesses names (CLEAVE_RANK_STATUS), and a rank that
// started but ends quietly unfinished fails the launch, named.
describe('ranks that end with code 0', () => {
  const ranks = join(dir, 'status.mjs');
  writeFileSync(ranks, `
import { rankStarted, rankFinished } from ${JSON.stringify(new URL('../../dist/runtime/launch/processes.js', import.meta.url).href)};
const rank = Number(process.env.RANK), mode = process.argv[2];
if (mode !== 'silent') rankStarted();
// Rank 1 stops early (its event loop emptied, say) and ends with code 0; the others finish.
if (mode === 'early' && rank === 1) process.exit(0);
if (mode !== 'silent') rankFinished();
`);
  const launch = (mode: string, logDir: string, requireFinished?: boolean) =>
    launchProcesses({ nprocs: 3, masterPort: 29515, command: process.execPath, args: [ranks, mode], logDir: join(dir, logDir), echo: () => undefined, graceMs: 500, requireFinished });

  it('succeed when every rank said it finished', async () => {
    expect((await launch('finish', 'finish')).codes).toEqual([0, 0, 0]);
  });

  it('fail the launch, naming the rank that started and never finished', async () => {
    await expect(launch('early', 'early')).rejects.toThrow(/rank 1 exited with code 0 before finishing its steps \(it started and never said it was done\); the other ranks were stopped \(its log: .*rank-1\.log\)/);
  });

  it('a program that says nothing is taken at its exit code, unless every rank must say it finished', async () => {
    expect((await launch('silent', 'silent')).codes).toEqual([0, 0, 0]);
    await expect(launch('silent', 'silent-required', true)).rejects.toThrow(/rank \d exited with code 0 without saying it finished its steps/);
  });

  it('a status left by an earlier launch into the same folder does not speak for this one', async () => {
    await launch('finish', 'reused');
    await expect(launch('early', 'reused')).rejects.toThrow(/rank 1 exited with code 0 before finishing/);
    await expect(launch('silent', 'reused', true)).rejects.toThrow(/without saying it finished/);
  });
});

// Over the rendezvous, a rank that leaves the run cleanly while another still waits for a message
// from it: the wait fails naming it, instead of hanging.
describe('a rank that leaves the run early', () => {
  it('ends the waits of the others on it, naming it', async () => {
    const left = join(dir, 'left.mjs');
    const dist = (f: string): string => JSON.stringify(new URL(`../../dist/runtime/${f}`, import.meta.url).href);
    writeFileSync(left, `
import { rendezvous } from ${dist('launch/rendezvous.js')};
import { worldFromEnv } from ${dist('launch/world.js')};
import { ControlTransport } from ${dist('transport/control.js')};
const world = worldFromEnv(process.env);
const r = await rendezvous(world, () => new Uint8Array([1]), 10000);
const t = new ControlTransport(r);
if (world.rank === 2) { r.close(); setTimeout(() => process.exit(0), 50); }
else {
  try { await t.recv(2, 'losses of step 3'); console.error('got it'); process.exit(0); }
  catch (e) { console.error(e.message); process.exit(4); }
}
`);
    const t0 = Date.now();
    await expect(launchProcesses({ nprocs: 3, masterPort: 29516, command: process.execPath, args: [left], logDir: join(dir, 'left'), echo: () => undefined, graceMs: 500 }))
      .rejects.toThrow(/rank [01] exited with code 4/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const said = [0, 1].map((r) => readFileSync(join(dir, 'left', `rank-${r}.log`), 'utf8')).join('');
    expect(said).toMatch(/rank [01] waits for 'losses of step 3' from rank 2, which has ended its run/);
  });
});
