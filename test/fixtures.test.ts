import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { expect, it } from 'vitest';
import { generateFixtures } from '../fixtures/generate.js';
import '../src/core/ops/index.js';
import { FIXTURES } from './helpers/fixtures.js';

it('`npm run fixtures` regenerates the committed built fixtures byte for byte', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cleave-fixtures-'));
  try {
    const files = generateFixtures(dir);
    expect(files.length).toBe(4);
    for (const f of [...files, join(dir, 'gpt_external.onnx.data')]) {
      expect(Buffer.compare(readFileSync(f), readFileSync(join(FIXTURES, basename(f)))), basename(f)).toBe(0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
