/**
 * Module hooks that let the CLI load a model written in TypeScript on any Node 20+: a `.ts`
 * (`.mts`, `.cts`) file is transpiled to JavaScript as it is imported (types are dropped, nothing is
 * type-checked), and a relative `./x.js` import from such a file finds `./x.ts`, as tsc's own
 * resolution does. Registered by `loadModelFile` (node:module register) before it imports a .ts model.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const TS_FILE = /\.[mc]?ts$/i;

interface ResolveContext { parentURL?: string }
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string; format?: string }>;
type NextLoad = (url: string, context: object) => Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array; shortCircuit?: boolean }>;

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string; format?: string }> {
  try {
    return await next(specifier, context);
  } catch (e) {
    const fromTs = context.parentURL !== undefined && TS_FILE.test(context.parentURL);
    if (fromTs && specifier.startsWith('.') && /\.[mc]?js$/i.test(specifier)) return next(specifier.replace(/\.([mc]?)js$/i, '.$1ts'), context);
    throw e;
  }
}

export async function load(url: string, context: object, next: NextLoad): Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array; shortCircuit?: boolean }> {
  if (!url.startsWith('file:') || !TS_FILE.test(url)) return next(url, context);
  const file = fileURLToPath(url);
  const out = ts.transpileModule(await readFile(file, 'utf8'), {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, sourceMap: false, inlineSourceMap: true },
  });
  return { format: /\.cts$/i.test(url) ? 'commonjs' : 'module', source: out.outputText, shortCircuit: true };
}
