// Builds the CUDA addon with nvcc: native/build/cleave_cuda.node. Each source compiles to its own object
// (native/build/obj/), as many at a time as the machine has cores, then one link. Where nvcc is absent,
// or CLEAVE_SKIP_NATIVE=1, the build is skipped (npm ci still succeeds; the CPU backend needs nothing of
// CUDA). Options: --force rebuilds everything (npm run build:native). Environment: NVCC (the compiler),
// CLEAVE_CUDA_ARCH (e.g. "80;90"), CLEAVE_SKIP_NATIVE, CI_REQUIRE_CUDA (a failed build exits 1).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const started = performance.now();
const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'build', 'cleave_cuda.node');
const objDir = join(here, 'build', 'obj');
const shown = relative(dirname(here), out); // native/build/cleave_cuda.node
const sources = ['addon.cpp', 'kernels.cu', 'kernels_extra.cu', 'attention.cu', 'cublas_api.cpp', 'cublaslt_api.cpp', 'gemm.cpp', 'nccl_api.cpp'].map((f) => join(here, 'src', f));
const force = process.argv.includes('--force');
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

const skip = process.env.CLEAVE_SKIP_NATIVE;
if (skip && skip !== '0' && skip.toLowerCase() !== 'false') {
  console.log(`cleave: CLEAVE_SKIP_NATIVE is set, skipping the CUDA addon (the CPU backend needs none of it)`);
  process.exit(0);
}
const nvcc = process.env.NVCC ?? (spawnSync('nvcc', ['--version']).status === 0 ? 'nvcc' : '');
if (!nvcc) {
  console.log('cleave: nvcc not found, skipping the CUDA addon (the CPU backend works without it)');
  process.exit(0);
}
// An NVCC that cannot be started (a wrong path) is said once, by name, before any work: otherwise each
// source failed on its own and the summary blamed the sources ("nvcc failed on kernels.cu, …").
if (process.env.NVCC) {
  const probe = spawnSync(nvcc, ['--version']);
  if (probe.error) fail(`NVCC=${nvcc} could not be started: ${probe.error.code ?? probe.error.message}`);
}

const require = createRequire(import.meta.url);
const nodeInclude = join(dirname(dirname(process.execPath)), 'include', 'node');
// include_dir is relative to the working directory; made absolute, it means the same.
const addonInclude = resolve(require('node-addon-api').include_dir ?? dirname(require.resolve('node-addon-api/napi.h')));
// Hopper (H100, H200) natively; PTX of the last arch for newer cards. CLEAVE_CUDA_ARCH overrides, e.g. "80;90".
const archs = (process.env.CLEAVE_CUDA_ARCH ?? '90').split(';').map((a) => a.trim()).filter(Boolean);
const compileFlags = [
  '-O3', '-std=c++17', '-Xcompiler', '-fPIC', '-Xcompiler', '-fvisibility=hidden',
  ...archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]), '-gencode', `arch=compute_${archs.at(-1)},code=compute_${archs.at(-1)}`,
  `-I${nodeInclude}`, `-I${addonInclude}`, '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
];
// No relocatable device code: each object holds its own device code, and nvcc links them like host objects.
const linkFlags = ['-shared'];
// An object built with other flags or another nvcc is stale: its <object>.flags file holds this hash.
const flagsHash = createHash('sha256').update(JSON.stringify([nvcc, compileFlags])).digest('hex');

/** The headers of src/ that `file` includes ("…" includes, followed through headers), with itself. */
function localDeps(file, seen = new Set([file])) {
  for (const m of readFileSync(file, 'utf8').matchAll(/^\s*#\s*include\s*"([^"]+)"/gm)) {
    const h = join(dirname(file), m[1]);
    if (!seen.has(h) && existsSync(h)) {
      seen.add(h);
      localDeps(h, seen);
    }
  }
  return seen;
}
const mtime = (f) => (existsSync(f) ? statSync(f).mtimeMs : -Infinity);
const objOf = (src) => join(objDir, `${basename(src)}.o`);
// A source is recompiled when it or a header it includes (directly or through another header) is at
// least as new as its object, or its object was built with other flags.
const stale = sources.filter((src) => {
  const obj = objOf(src);
  if (force || !existsSync(obj) || !existsSync(`${obj}.flags`) || readFileSync(`${obj}.flags`, 'utf8') !== flagsHash) return true;
  const built = mtime(obj);
  return [...localDeps(src)].some((f) => mtime(f) >= built);
});
// Strictly newer: the link runs after every object is written, so a tie (coarse or equal timestamps) is the link.
const relink = stale.length > 0 || force || sources.some((src) => mtime(objOf(src)) > mtime(out));
if (!relink) {
  console.log(`cleave: the CUDA addon is up to date (${shown}; npm run build:native rebuilds it)`);
  process.exit(0);
}

/** Runs nvcc; resolves to its exit status (or -1 where it could not start) and all it printed, in order. */
function nvccRun(args) {
  return new Promise((done) => {
    let text = '';
    const child = spawn(nvcc, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (text += d));
    child.stderr.on('data', (d) => (text += d));
    child.on('error', (e) => done({ status: -1, text: `${text}${e.message}\n` }));
    child.on('close', (status, signal) => done({ status: status ?? signal, text }));
  });
}
/** The build failed: says why and exits (1 only with CI_REQUIRE_CUDA). */
function fail(what) {
  console.error(`cleave: the CUDA addon failed to build (${what}); the CPU backend still works`);
  process.exit(process.env.CI_REQUIRE_CUDA ? 1 : 0);
}

// Device code first (it takes longest; kernels.cu most of all), larger files first: the last job to
// finish is then a short one.
const queue = [...stale].sort((a, b) => Number(b.endsWith('.cu')) - Number(a.endsWith('.cu')) || statSync(b).size - statSync(a).size);
const jobs = Math.max(1, Math.min(availableParallelism(), queue.length));
mkdirSync(objDir, { recursive: true });
if (stale.length === 0) console.log(`cleave: relinking the CUDA addon (${shown}): its objects are newer`);
else {
  const count = stale.length === sources.length ? `${sources.length} sources` : `${stale.length} of ${sources.length} sources`;
  console.log(
    `cleave: building the CUDA addon (${shown}) with ${nvcc} for ${archs.map((a) => `sm_${a}`).join(', ')}: ${count}, ${jobs} at a time ` +
      `(a full build takes about 20 s on 2 cores); CLEAVE_SKIP_NATIVE=1 skips it, the CPU backend needs none of it`,
  );
}

let finished = 0;
const failed = [];
async function worker() {
  while (queue.length && !failed.length) {
    const src = queue.shift();
    const obj = objOf(src);
    const tmp = `${obj}.tmp.o`;
    const began = Date.now();
    const t = performance.now();
    const { status, text } = await nvccRun([...compileFlags, '-c', src, '-o', tmp]);
    const name = basename(src);
    finished += 1;
    if (status === 0) {
      // The object takes the time its compile began: a source edited during the compile stays newer.
      renameSync(tmp, obj);
      utimesSync(obj, began / 1000, began / 1000);
      writeFileSync(`${obj}.flags`, flagsHash);
      console.log(`cleave:   [${finished}/${stale.length}] ${name} ${secs(performance.now() - t)}`);
      if (text) process.stdout.write(text);
    } else {
      rmSync(tmp, { force: true });
      failed.push(name);
      const why = status === -1 ? 'nvcc could not start' : `nvcc exit ${status}`;
      console.error(`cleave:   [${finished}/${stale.length}] ${name} FAILED (${why}) after ${secs(performance.now() - t)}:`);
      process.stderr.write(text);
    }
  }
}
await Promise.all(Array.from({ length: jobs }, worker));
if (failed.length) fail(`nvcc failed on ${failed.join(', ')}`);

// Linked under another name, then moved into place: a process that has the old addon loaded keeps a
// whole file.
const t = performance.now();
const tmpOut = `${out}.tmp`;
const { status, text } = await nvccRun([...linkFlags, ...sources.map(objOf), '-o', tmpOut, '-ldl']);
if (status !== 0) {
  rmSync(tmpOut, { force: true });
  console.error(`cleave:   link FAILED (${status === -1 ? 'nvcc could not start' : `nvcc exit ${status}`}):`);
  process.stderr.write(text);
  fail('the link failed');
}
if (text) process.stdout.write(text);
renameSync(tmpOut, out);
// Stamped by this process's clock, the one the objects' times came from: the file system's own
// (coarser) stamp of a link that ends within milliseconds can fall before the last object's,
// which the next build would read as objects newer than the addon.
const linked = Date.now() / 1000;
utimesSync(out, linked, linked);
console.log(`cleave: built ${shown} in ${secs(performance.now() - started)} (link ${secs(performance.now() - t)})`);
