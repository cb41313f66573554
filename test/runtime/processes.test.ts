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
