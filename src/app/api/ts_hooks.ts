/**
 * Module hooks the CLI registers before it imports a model file (`cleave compile model.ts|.js`):
 * - `import … from 'cleave'` is the running CLI's own package, wherever the model
 *   file lives, so its modules are the classes the tracer knows;
 * - an import of cleave's own TypeScript sources (a model in the repository's examples/ importing
 *   `../src/app/api/index.js`) loads the build the CLI runs from, not a second copy of the sources;
 * - a `.ts` (`.mts`, `.cts`) file is transpiled to JavaScript as it is imported (types are dropped,
 *   nothing is type-checked), with an inline source map so errors point at its own lines, and a
 *   relative `./x.js` import from such a file finds `./x.ts`, as tsc's own resolution does.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const TS_FILE = /\.[mc]?ts$/i;

interface ResolveContext { parentURL?: string }
type Resolved = { url: string; format?: string; shortCircuit?: boolean };
type NextResolve = (specifier: string, context: ResolveContext) => Promise<Resolved>;
type NextLoad = (url: string, context: object) => Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array; shortCircuit?: boolean }>;

/** This file is `<package>/dist/src/app/api/ts_hooks.js` in a build (`<package>/src/app/api/ts_hooks.ts` in the sources). */
const here = fileURLToPath(import.meta.url);
const built = here.split(sep).includes('dist');
const packageRoot = fileURLToPath(new URL(built ? '../../../../' : '../../../', import.meta.url));
const entry = new URL('./index.js', import.meta.url).href;

/** A cleave source file's counterpart in the build the CLI runs from, if it has one. */
function ownBuild(url: string): string | undefined {
  if (!built || !url.startsWith('file:')) return undefined;
  const rel = relative(packageRoot, fileURLToPath(url));
  if (rel.startsWith('..') || rel.startsWith(`dist${sep}`) || rel.startsWith(`node_modules${sep}`)) return undefined;
  if (!/^(src|compiler|runtime)[\\/]/.test(rel)) return undefined;
  const js = `${packageRoot}dist${sep}${rel.replace(/\.[mc]?ts$/i, '.js')}`;
  return existsSync(js) ? pathToFileURL(js).href : undefined;
}

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<Resolved> {
  if (specifier === 'cleave') return { url: entry, shortCircuit: true };
  let found: Resolved;
  try {
    found = await next(specifier, context);
  } catch (e) {
    const fromTs = context.parentURL !== undefined && TS_FILE.test(context.parentURL);
    if (!(fromTs && specifier.startsWith('.') && /\.[mc]?js$/i.test(specifier))) throw e;
    found = await next(specifier.replace(/\.([mc]?)js$/i, '.$1ts'), context);
  }
  const own = ownBuild(found.url);
  return own ? { url: own, shortCircuit: true } : found;
}

export async function load(url: string, context: object, next: NextLoad): Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array; shortCircuit?: boolean }> {
  if (!url.startsWith('file:') || !TS_FILE.test(url)) return next(url, context);
  const file = fileURLToPath(url);
  const out = ts.transpileModule(await readFile(file, 'utf8'), {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, sourceMap: false, inlineSourceMap: true, inlineSources: true },
  });
  return { format: /\.cts$/i.test(url) ? 'commonjs' : 'module', source: out.outputText, shortCircuit: true };
}
