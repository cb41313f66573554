import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

// The floors of docs/architecture.md: the core (src/core) imports only itself; the compiler and the
// runtime only the core (and themselves); the app (src/app: api, cli) whatever it needs.

const ROOT = join(dirname(new URL(import.meta.url).pathname), '..');

type Floor = 'core' | 'compiler' | 'runtime' | 'app';

export function floorOf(path: string): Floor | undefined {
  const p = path.replace(/\\/g, '/');
  if (p.startsWith('src/app/')) return 'app';
  if (p.startsWith('src/core/')) return 'core';
  if (p.startsWith('compiler/')) return 'compiler';
  if (p.startsWith('runtime/')) return 'runtime';
  return undefined;
}

const ALLOWED: Record<Floor, readonly Floor[]> = {
  core: ['core'],
  compiler: ['core', 'compiler'],
  runtime: ['core', 'runtime'],
  app: ['core', 'compiler', 'runtime', 'app'],
};

/** Imports that still cross a floor, each with the work that removes it (none left). */
const KNOWN = new Set<string>([]);

const SPEC = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;

/** Every relative import of a source text: its target (as a .ts path from the root) and line. */
export function importsOf(file: string, text: string): { target: string; line: number }[] {
  const out: { target: string; line: number }[] = [];
  for (const m of text.matchAll(SPEC)) {
    const target = normalize(join(dirname(file), m[1]!)).replace(/\\/g, '/').replace(/\.js$/, '.ts');
    out.push({ target, line: text.slice(0, m.index).split('\n').length });
  }
  return out;
}

export function crossings(files: Record<string, string>): { file: string; line: number; edge: string; from: Floor; to: Floor }[] {
  const bad = [];
  for (const [file, text] of Object.entries(files)) {
    const from = floorOf(file);
    if (!from) continue;
    for (const { target, line } of importsOf(file, text)) {
      const to = floorOf(target);
      if (to && !ALLOWED[from].includes(to)) bad.push({ file, line, edge: `${file} -> ${target}`, from, to });
    }
  }
  return bad;
}

function sources(dir: string, out: Record<string, string> = {}): Record<string, string> {
  for (const name of readdirSync(join(ROOT, dir))) {
    const rel = `${dir}/${name}`;
    if (statSync(join(ROOT, rel)).isDirectory()) sources(rel, out);
    else if (name.endsWith('.ts')) out[relative(ROOT, join(ROOT, rel)).replace(/\\/g, '/')] = readFileSync(join(ROOT, rel), 'utf8');
  }
  return out;
}

describe('floors', () => {
  const tree = { ...sources('src'), ...sources('compiler'), ...sources('runtime') };

  it('no import runs against the floors, but the known ones (which are still there)', () => {
    const found = crossings(tree);
    const unknown = found.filter((c) => !KNOWN.has(c.edge)).map((c) => `${c.file}:${c.line}: the ${c.from} imports the ${c.to} (${c.edge.split(' -> ')[1]})`);
    expect(unknown, unknown.join('\n')).toEqual([]);
    // A known crossing that is gone leaves the list: keep it true.
    const gone = [...KNOWN].filter((k) => !found.some((c) => c.edge === k));
    expect(gone, `no longer crossing, remove from KNOWN: ${gone.join(', ')}`).toEqual([]);
  });

  it('every source file lies on a floor: src/ holds only the core (src/core) and the app (src/app)', () => {
    expect(Object.keys(tree).filter((f) => !floorOf(f))).toEqual([]);
  });

  it('reads static, dynamic and re-exporting imports, and names the file and line of a crossing', () => {
    const files = {
      'src/core/plan/x.ts': "import { a } from '../../app/cli/format.js';\nexport { b } from './y.js';\n",
      'compiler/p.ts': "const m = await import('../runtime/launch/cpu.js');\n",
      'runtime/q.ts': "\n\nexport * from '../compiler/compile.js';\nimport '../src/core/ops/index.js';\n",
      'src/app/cli/r.ts': "import { c } from '../../../compiler/compile.js';\nimport { d } from '../../../runtime/launch/cpu.js';\n",
    };
    expect(crossings(files).map((c) => `${c.file}:${c.line} ${c.from}->${c.to}`)).toEqual([
      'src/core/plan/x.ts:1 core->app',
      'compiler/p.ts:1 compiler->runtime',
      'runtime/q.ts:3 runtime->compiler',
    ]);
  });
});
