// `cleave run` for multi-rank plans on GPUs: the checks that come before any GPU is touched.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { writePlan } from '../../src/core/plan/io.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-run-gpus-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const two = join(dir, 'two.plan');
writePlan(two, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', batch: 4 }).plan);

describe('cleave run on several GPUs (errors)', () => {
  it('asks for a launcher when a multi-rank plan runs on the cuda backend without one', () => {
    const r = cli(['run', two, '--backend', 'cuda', '--steps', '1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/has 2 ranks: run it with --gpus 2 on one host, or start one process per GPU with torchrun, Slurm or mpirun/);
  });

  it('refuses --gpus without the cuda backend, a count that is not the plan\'s, and --log-dir alone', async () => {
    expect((await cliInProcess(['run', two, '--gpus', '2'])).stderr).toMatch(/--gpus needs --backend cuda/);
    expect((await cliInProcess(['run', two, '--backend', 'cuda', '--gpus', '3'])).stderr).toMatch(/has 2 ranks; --gpus 3 starts 3 processes/);
    expect((await cliInProcess(['run', two, '--log-dir', dir])).stderr).toMatch(/--log-dir goes with --gpus/);
    expect((await cliInProcess(['run', two, '--backend', 'cuda', '--gpus', '0'])).stderr).toMatch(/--gpus/);
  });

  it('names a process count that does not match the plan, from the launcher\'s variables', () => {
    const r = spawnSync(process.execPath, ['bin/cleave.js', 'run', two, '--backend', 'cuda', '--steps', '1'], {
      encoding: 'utf8', env: { ...process.env, RANK: '0', WORLD_SIZE: '3', LOCAL_RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29999' },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/has 2 ranks \(2 pipeline × 1 data parallel\), but torchrun started 3 processes/);
  });

  it('refuses a malformed CLEAVE_FAIL_AT (the fault tests\' hook)', () => {
    const r = spawnSync(process.execPath, ['bin/cleave.js', 'run', two, '--steps', '1'], { encoding: 'utf8', env: { ...process.env, CLEAVE_FAIL_AT: 'one' } });
    expect(r.stderr).toMatch(/CLEAVE_FAIL_AT=one is not rank:step:instruction/);
  });
});
