// Finding a checkpoint, and resuming it under any plan of the same model: shards are written per
// rank, and read by parameter name.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CleaveError } from '../../src/core/errors.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { readPlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import type { DataSource } from '../data/sources.js';
import { replicaSource } from '../launch/data.js';
import type { RunOptions } from '../launch/options.js';
import type { OptimizerState } from '../optim/optimizer.js';
import { type Manifest, type Shard, type ShardHeader, type ShardPlace, readManifest, readShard, readShardHeader } from './checkpoint.js';

const STEP_DIR = /^step-(\d+)$/;

/** A checkpoint folder found from what the user gave: `dir` holds manifest.json and its shards. */
export interface ResolvedCheckpoint {
  dir: string;
  step: number;
  /** Set when `path` was a folder of step-N checkpoints: which one was taken, and why. */
  note?: string;
}

/** A step-N folder's manifest where the folder is a complete checkpoint, else what keeps it from being one. */
function complete(dir: string): Manifest | { why: string } {
  if (!existsSync(join(dir, 'manifest.json'))) return { why: 'no manifest.json: the save did not finish' };
  let m: Manifest;
  try {
    m = readManifest(dir);
  } catch (e) {
    return { why: e instanceof CleaveError ? e.message.replace(`${join(dir, 'manifest.json')}: `, 'manifest.json: ') : String(e) };
  }
  const missing = m.shards.filter((s) => !existsSync(join(dir, s)));
  if (!missing.length) return m;
  return { why: missing.length === 1 ? `shard ${missing[0]} missing` : `shards ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? `, … (${missing.length})` : ''} missing` };
}

/**
 * The checkpoint `path` names: a step-N folder with manifest.json (and every shard it lists), or a
 * --checkpoint-dir of step-N folders, whose newest complete step is taken (with a note saying
 * which). Throws a CleaveError naming what is wrong: each step found and what it lacks when none
 * is complete, or that `path` is neither.
 */
export function resolveCheckpoint(path: string): ResolvedCheckpoint {
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    throw new CleaveError(`${path}: no manifest.json; not a complete checkpoint (no such folder)`);
  }
  if (!isDir) throw new CleaveError(`${path}: is a file; a checkpoint is a folder (step-N with manifest.json, or the --checkpoint-dir holding step-N folders)`);
  if (existsSync(join(path, 'manifest.json'))) {
    const m = complete(path);
    if ('why' in m) throw new CleaveError(`${path}: not a complete checkpoint: ${m.why}`);
    return { dir: path, step: m.step };
  }
  const steps = readdirSync(path)
    .map((name) => ({ name, n: Number(STEP_DIR.exec(name)?.[1] ?? NaN) }))
    .filter((s) => Number.isInteger(s.n) && statSync(join(path, s.name)).isDirectory())
    .sort((a, b) => b.n - a.n);
  if (!steps.length) {
    const why = STEP_DIR.test(basename(path)) ? 'the save did not finish' : 'nor a folder of step-N checkpoints';
    throw new CleaveError(`${path}: no manifest.json; not a complete checkpoint (${why})`);
  }
  const skipped: string[] = [];
  for (const s of steps) {
    const dir = join(path, s.name);
    const m = complete(dir);
    if ('why' in m) {
      skipped.push(`${s.name} (${m.why})`);
      continue;
    }
    const newer = skipped.length ? `; skipped ${skipped.join(', ')}` : '';
    return { dir, step: m.step, note: `using ${dir}, the newest complete of ${steps.length} step${steps.length === 1 ? '' : 's'} found${newer}` };
  }
  throw new CleaveError(`${path}: no complete checkpoint: ${skipped.join(', ')}`);
}

/** What a checkpoint is read for: said in the refusal of one that cannot be trusted. */
export type CheckpointPurpose = 'resume' | 'export';

/**
 * A checkpoint opened for reading: its manifest and every shard's header (what it holds, read up
 * front and small), and each shard's bytes read on first use, once (`shard`), not once per tensor.
 *
 * Nothing of it is trusted blindly: every header is checked (its own checksum, its fields, its
 * offsets), the shards must be of one save (one run id and plan checksum, the manifest's; the
 * manifest's step; one optimizer step count), and each shard's bytes must match its checksum and
 * the one the manifest lists before any tensor is made of them. Whatever fails is a CleaveError
 * naming the shard, ending `refusing to resume` (or export). A checkpoint of an earlier cleave,
 * without checksums, is read with a warning (`warnings`) that it cannot be verified.
 */
export class CheckpointReader {
  readonly manifest: Manifest;
  readonly headers: ShardHeader[];
  /** Each old rank's place in the plan that wrote it; undefined when the checkpoint does not say. */
  readonly places: ShardPlace[] | undefined;
  /** The optimizer's step count, the same in every shard. */
  readonly optimizerStep: number;
  /** What to say once about this checkpoint (it cannot be verified). */
  readonly warnings: string[] = [];
  private readonly cache = new Map<number, Shard>();
  /** Old ranks whose shards were read. */
  readonly read = new Set<number>();
  /** Old ranks holding each tensor, lowest first. */
  readonly holders = new Map<string, number[]>();

  constructor(readonly dir: string, readonly purpose: CheckpointPurpose = 'resume') {
    this.manifest = readManifest(dir);
    const m = this.manifest;
    const headers = this.refusing(() => {
      if (m.shards.length !== m.world) throw new CleaveError(`${join(dir, 'manifest.json')}: lists ${m.shards.length} shards for ${m.world} ranks`);
      return m.shards.map((name, r) => {
        const file = join(dir, name);
        if (!existsSync(file)) throw new CleaveError(`${dir}: shard ${name} is missing`);
        const h = readShardHeader(file);
        if (h.rank !== r) throw new CleaveError(`${file}: holds rank ${h.rank}, not ${r}`);
        if (h.step !== m.step) throw new CleaveError(`${file}: is of step ${h.step}; the manifest says step ${m.step}`);
        return h;
      });
    });
    this.headers = headers;
    this.refusing(() => this.checkOneSave());
    const first = this.headers[0]!;
    for (const h of this.headers) {
      for (const t of h.tensors) {
        const list = this.holders.get(t.name);
        if (list) list.push(h.rank);
        else this.holders.set(t.name, [h.rank]);
      }
    }
    this.optimizerStep = first.optimizer.step;
    this.places = oldPlaces(m, this.headers);
    const old = this.headers.filter((h) => h.version === 1);
    if (old.length) {
      const which = old.length === this.headers.length ? 'its shards' : `shard${old.length === 1 ? '' : 's'} ${old.map((h) => m.shards[h.rank]).join(', ')}`;
      this.warnings.push(`${dir} was written by an earlier cleave, without checksums: ${which} cannot be verified (a damaged or mixed checkpoint would go unnoticed); checkpoints written from now on carry them`);
    }
  }

  /** Runs `f`, a refusal of the checkpoint saying what for. */
  private refusing<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof CleaveError && !e.message.includes(REFUSING)) throw new CleaveError(`${e.message}${REFUSING}${this.purpose}`);
      throw e;
    }
  }

  /** The shards are of one save: the same run and plan (the manifest's where it says), one optimizer step count, checksums where the manifest lists them. */
  private checkOneSave(): void {
    const m = this.manifest;
    const file = (r: number): string => join(this.dir, m.shards[r]!);
    const first = this.headers[0]!;
    const short = (x: string | undefined): string => (x === undefined ? 'none' : x.length > 16 ? `${x.slice(0, 12)}…` : x);
    for (const h of this.headers) {
      const run = h.identity?.run, plan = h.identity?.planSha256;
      // Against the manifest where it names the run, else against the first shard.
      const [wantRun, wantPlan, whose] = m.run !== undefined ? [m.run, m.planSha256, "the manifest's"] : [first.identity?.run, first.identity?.planSha256, `${m.shards[0]}'s`];
      if (run !== wantRun) {
        throw new CleaveError(`${file(h.rank)}: was written by ${run === undefined ? 'no recorded run' : `run ${short(run)}`}, ${whose} by ${wantRun === undefined ? 'no recorded run' : `run ${short(wantRun)}`}: the folder mixes shards of two runs (one saved over the other's, cut short)`);
      }
      if (plan !== wantPlan) {
        throw new CleaveError(`${file(h.rank)}: was written by a run of the plan with checksum ${short(plan)}, ${whose} of ${short(wantPlan)}: the shards are not of one checkpoint`);
      }
      if (m.sha256 && h.version === 1) throw new CleaveError(`${file(h.rank)}: has no checksum, but the manifest lists one: the shard is of an earlier save`);
    }
    for (const h of this.headers) {
      if (h.optimizer.step !== first.optimizer.step) {
        throw new CleaveError(`${file(h.rank)}: its optimizer has taken ${h.optimizer.step} steps, ${m.shards[0]}'s ${first.optimizer.step}: the shards are not of one checkpoint`);
      }
    }
  }

  /** Old rank `r`'s shard header agrees with the checksum the manifest lists for it (where it lists one). */
  private checkListed(r: number): void {
    const name = this.manifest.shards[r]!;
    const listed = this.manifest.sha256?.[name];
    const own = this.headers[r]!.sha256;
    if (listed !== undefined && listed !== own) {
      throw new CleaveError(`${join(this.dir, name)}: its checksum ${own?.slice(0, 12)}… is not the ${listed.slice(0, 12)}… the manifest lists for it: the shard was replaced after the checkpoint was saved`);
    }
  }

  /**
   * Every shard's header agrees with the manifest's list of checksums. Checked as each shard is
   * read, and by checkResume for all of them (after what the plan needs: a checkpoint of the wrong
   * shape says so first).
   */
  verifyListed(): void {
    this.refusing(() => this.headers.forEach((_, r) => this.checkListed(r)));
  }

  /** Old rank `r`'s shard, read from disk the first time it is asked for (its bytes verified first). */
  shard(r: number): Shard {
    let s = this.cache.get(r);
    if (!s) {
      s = this.refusing(() => {
        this.checkListed(r);
        return readShard(this.dir, r);
      });
      this.cache.set(r, s);
      this.read.add(r);
    }
    return s;
  }

  /** Drops the shards read so far (their memory), keeping the headers. */
  release(): void {
    this.cache.clear();
  }
}

const REFUSING = ': refusing to ';

export const openCheckpoint = (dir: string, purpose: CheckpointPurpose = 'resume'): CheckpointReader => new CheckpointReader(dir, purpose);

/**
 * Where each old rank sat: from the shards (written since this was recorded), else from the plan
 * the manifest names where that file is still there and has the checkpoint's world.
 */
function oldPlaces(m: Manifest, headers: readonly ShardHeader[]): ShardPlace[] | undefined {
  if (headers.every((h) => h.place)) return headers.map((h) => h.place!);
  try {
    const p = readPlan(m.plan);
    if (p.ranks.length === m.world) return p.ranks.map((r) => ({ pp: p.world.pp, dp: p.world.dp, ppRank: r.ppRank, dpRank: r.dpRank }));
  } catch {
    // The writing plan is gone: the shards' own contents decide below.
  }
  return undefined;
}

/** A parameter or state tensor a rank of a plan holds. */
export interface RankTensor {
  value: number;
  name: string;
  shape: number[];
  /** Has a gradient on this rank (the optimizer keeps state for it). */
  trainable: boolean;
}

/** The parameters and state a rank of `plan` holds: every one its stages' programs read. */
export function rankTensors(plan: Plan, rank: number): RankTensor[] {
  const me = plan.ranks[rank];
  if (!me) throw new CleaveError(`the plan has no rank ${rank}`);
  const out = new Map<number, RankTensor>();
  const add = (v: number, trainable = false): void => {
    const pv = plan.values[v];
    if (!pv || (pv.kind !== 'param' && pv.kind !== 'state')) return;
    const have = out.get(v);
    if (have) have.trainable ||= trainable;
    else out.set(v, { value: v, name: pv.name, shape: pv.shape, trainable });
  };
  for (const s of plan.stages) {
    if (s.ppRank !== me.ppRank) continue;
    for (const k of ['forward', 'backwardB', 'backwardW'] as const) for (const i of s[k]) for (const v of plan.nodes[i]!.inputs) if (v >= 0) add(v);
    for (const v of s.params) add(v);
    for (const g of s.grads) add(g.param, true);
    for (const st of s.states) add(st.state);
  }
  return [...out.values()];
}

/** What a rank resumes from: its tensors, optimizer state and generators. */
export interface ResumeState {
  step: number;
  tensors: ReadonlyMap<string, Tensor>;
  optimizer: OptimizerState;
  /** `data` absent: the data streams cannot continue (another data-parallel degree); they restart (resumeDataSource). */
  rng: { data?: number[]; dropout: number };
}

/** A ResumeState as it crosses to a worker thread (tensors as pairs, as the ONNX weights go). */
export type PortableResume = Omit<ResumeState, 'tensors'> & { tensors: [string, Tensor][] };

/** A rank's gathered checkpoint (gatherCheckpoint). */
export interface GatheredCheckpoint extends ResumeState {
  tensors: Map<string, Tensor>;
  /** The checkpoint's folder. */
  dir: string;
  /** This rank's old shard was written by the same rank of the same world and split: it is taken whole, as written. */
  exact: boolean;
  /** Old ranks whose shards this rank's tensors came from. */
  from: number[];
  /** What resuming under this plan does differently, to say once (the same for every rank). */
  notes: string[];
  /** What cannot continue exactly, to say once as a warning (the same for every rank). */
  warnings: string[];
}

const describe = (pp: number | undefined, dp: number | undefined, size: number): string => (pp !== undefined && dp !== undefined ? `pp ${pp} × dp ${dp}` : `${size} ranks`);

/** The old world's degrees, if known. */
function oldDegrees(ck: CheckpointReader): { pp?: number; dp?: number } {
  const p = ck.places?.[0];
  return { pp: ck.manifest.pp ?? p?.pp, dp: ck.manifest.dp ?? p?.dp };
}

/** Whether the new plan's world is the old one rank for rank (size, degrees and every rank's place). */
function sameWorld(ck: CheckpointReader, plan: Plan): boolean {
  if (ck.manifest.world !== plan.world.size) return false;
  // A checkpoint that does not say where its ranks sat (written before it did, its plan gone): of
  // the same size, it is taken as the same world, as resuming did then.
  if (!ck.places) return true;
  return plan.ranks.every((r) => {
    const p = ck.places![r.rank]!;
    return p.pp === plan.world.pp && p.dp === plan.world.dp && p.ppRank === r.ppRank && p.dpRank === r.dpRank;
  });
}

/** Names of parameters of `plan` that no shard holds (over all its ranks, in value order). */
function missingTensors(ck: CheckpointReader, plan: Plan, ranks: readonly number[]): string[] {
  const missing = new Set<string>();
  for (const r of ranks) for (const t of rankTensors(plan, r)) if (!ck.holders.has(t.name)) missing.add(t.name);
  return [...missing];
}

/** Whether old rank `rank`'s shard holds exactly what rank `rank` of `plan` holds. */
function sameSplit(ck: CheckpointReader, plan: Plan, rank: number): boolean {
  const own = ck.headers[rank];
  if (!own) return false;
  const names = new Set(own.tensors.map((t) => t.name));
  const needs = rankTensors(plan, rank);
  return names.size === needs.length && needs.every((t) => names.has(t.name));
}

function missingError(ck: CheckpointReader, plan: Plan, missing: readonly string[]): CleaveError {
  const shown = missing.slice(0, 4).map((n) => `'${n}'`).join(', ') + (missing.length > 4 ? `, … (${missing.length} in all)` : '');
  return new CleaveError(`${ck.dir}: the checkpoint has no tensor for ${missing.length === 1 ? 'parameter' : 'parameters'} ${shown} of this plan's model ${plan.model.source}; it was written for ${ck.manifest.model}`);
}

/**
 * Checks, from the shards' headers only, that a checkpoint can resume every rank of `plan`: every
 * parameter and state tensor is held by some shard with the plan's shape, and the shards' optimizer
 * step counts agree. Throws a CleaveError otherwise. Cheap: run it before starting ranks.
 */
export function checkResume(dir: string | CheckpointReader, plan: Plan): { step: number } {
  const ck = typeof dir === 'string' ? openCheckpoint(dir) : dir;
  const missing = missingTensors(ck, plan, plan.ranks.map((r) => r.rank));
  if (missing.length) throw missingError(ck, plan, missing);
  for (const r of plan.ranks) for (const t of rankTensors(plan, r.rank)) checkShape(ck, t, ck.holders.get(t.name)![0]!);
  ck.verifyListed();
  return { step: ck.manifest.step };
}

function checkShape(ck: CheckpointReader, t: RankTensor, holder: number): void {
  const h = ck.headers[holder]!.tensors.find((x) => x.name === t.name)!;
  if (h.shape.join() !== t.shape.join()) {
    throw new CleaveError(`${join(ck.dir, ck.manifest.shards[holder]!)}: '${t.name}' has shape [${h.shape.join(', ')}]; the plan expects [${t.shape.join(', ')}]`);
  }
}

/**
 * Everything rank `rank` of `plan` resumes from, gathered by parameter name from whichever of the
 * checkpoint's shards hold it, so that a checkpoint written under one split (pipeline degree,
 * schedule, virtual stages, data-parallel degree) resumes under another:
 *
 * - tensors and optimizer buffers: each from one old rank holding it. Tied parameters (held by
 *   several pipeline ranks) and replicated ones (every data-parallel replica) are kept equal by the
 *   all-reduced updates, so any copy serves; the choice prefers this rank's own old shard (where the
 *   world is the same), then an old rank of the same data-parallel replica (BatchNorm statistics
 *   are per replica), then the lowest old rank.
 * - the data stream, per data-parallel replica: with the same dp degree, replica d continues the
 *   stream of old replica d (its pipeline rank 0); under another dp degree it cannot continue and
 *   restarts (rng.data absent; resumeDataSource), with a warning.
 * - Dropout's generator: this rank's own where the world is the same, else derived from the old
 *   rank 0's and this rank, with a warning where the model has Dropout.
 *
 * Where the world and split are the old ones (`exact`), the rank's own shard is taken whole, as
 * written, and the run continues bit for bit. Each shard file is read once per reader (pass one
 * CheckpointReader to gather several ranks in one process). Throws a CleaveError naming the first
 * missing parameters where the checkpoint is of another model.
 */
export function gatherCheckpoint(dir: string | CheckpointReader, plan: Plan, rank: number): GatheredCheckpoint {
  const ck = typeof dir === 'string' ? openCheckpoint(dir) : dir;
  const m = ck.manifest;
  const me = plan.ranks[rank];
  if (!me) throw new CleaveError(`the plan has no rank ${rank}`);
  const needs = rankTensors(plan, rank);
  const missing = missingTensors(ck, plan, [rank]);
  if (missing.length) throw missingError(ck, plan, missing);
  const world = sameWorld(ck, plan);
  const old = oldDegrees(ck);
  const sameDp = world || (old.dp !== undefined && ck.places !== undefined && old.dp === plan.world.dp);
  const notes: string[] = [];
  const warnings: string[] = [...ck.warnings];
  if (!world) {
    notes.push(`${ck.dir} was written under ${describe(old.pp, old.dp, m.world)}; this plan is pp ${plan.world.pp} × dp ${plan.world.dp}: each rank gathers its parameters and optimizer state by name from the shards that hold them`);
  }
  if (!sameDp) {
    warnings.push(`${ck.dir} was written under ${old.dp !== undefined ? `dp ${old.dp}` : 'a data-parallel degree it does not record'} and this plan has dp ${plan.world.dp}: the data streams cannot continue exactly; each replica's starts afresh from the seed at step ${m.step}`);
  }
  const dropout = plan.nodes.some((n) => n.op === 'Dropout');
  if (!world && dropout) warnings.push(`the world changed, so Dropout's generators cannot continue rank by rank: each rank's is derived from the checkpoint's and the rank; masks differ from an unbroken run's`);

  if (world && !plan.ranks.every((r) => sameSplit(ck, plan, r.rank))) {
    notes.push(`${ck.dir} was written under this world (${describe(old.pp, old.dp, m.world)}) with another split of the model over its ranks: each rank gathers its parameters and optimizer state by name from the shards that hold them`);
  }
  const exact = world && sameSplit(ck, plan, rank);
  if (exact) {
    for (const t of needs) checkShape(ck, t, rank);
    const s = ck.shard(rank);
    return { dir: ck.dir, step: s.step, tensors: s.tensors, optimizer: s.optimizer, rng: s.rng, exact: true, from: [rank], notes, warnings };
  }

  // One old rank per tensor.
  const rankOf = (holders: readonly number[]): number => {
    if (world && holders.includes(rank)) return rank;
    if (sameDp && ck.places) {
      const same = holders.find((h) => ck.places![h]!.dpRank === me.dpRank);
      if (same !== undefined) return same;
    }
    return holders[0]!;
  };
  const tensors = new Map<string, Tensor>();
  const buffers: OptimizerState['buffers'] = {};
  const from = new Set<number>();
  // Every shape first, from the headers: a checkpoint of another shape says so before any shard is read.
  for (const t of needs) checkShape(ck, t, rankOf(ck.holders.get(t.name)!));
  for (const t of needs) {
    const holders = ck.holders.get(t.name)!;
    const h = rankOf(holders);
    tensors.set(t.name, ck.shard(h).tensors.get(t.name)!);
    from.add(h);
    if (!t.trainable) continue;
    // The optimizer's buffers of a parameter sit with it; take the same copy's (any holder's if its
    // shard has none, e.g. written by a rank that does not update it).
    const withBuffers = [h, ...holders.filter((x) => x !== h)].find((x) => ck.headers[x]!.optimizer.buffers.includes(t.name));
    if (withBuffers !== undefined) {
      buffers[t.name] = ck.shard(withBuffers).optimizer.buffers[t.name]!;
      from.add(withBuffers);
    }
  }

  // Generators.
  let data: number[] | undefined;
  if (world) data = ck.headers[rank]!.rng.data;
  else if (sameDp) {
    // Every rank of a replica draws the same stream; its pipeline rank 0's state is the replica's.
    const r = ck.places!.findIndex((p) => p.dpRank === me.dpRank && p.ppRank === 0);
    data = ck.headers[r]!.rng.data;
  }
  const dropoutState = world ? ck.headers[rank]!.rng.dropout : (ck.headers[0]!.rng.dropout ^ Math.imul(rank + 1, 0x9e3779b9)) >>> 0;
  return {
    dir: ck.dir, step: m.step, tensors, optimizer: { step: ck.optimizerStep, buffers },
    rng: data !== undefined ? { data, dropout: dropoutState } : { dropout: dropoutState },
    exact: false, from: [...from].sort((a, b) => a - b), notes, warnings,
  };
}

/**
 * The seed a replica's data stream restarts from when a checkpoint resumes under another
 * data-parallel degree: --seed moved on by the resumed step, so that the restarted streams do not
 * replay the samples of the steps already taken.
 */
export const restartSeed = (seed: number, step: number): number => (seed + Math.imul(step, 1_000_003)) >>> 0;

/**
 * A replica's data source for a run, resumed: where the checkpoint's stream continues, restored to
 * it; where it cannot (`rng.data` absent), started afresh from restartSeed.
 */
export function resumeDataSource(plan: Plan, o: RunOptions, dpRank: number, r?: Pick<ResumeState, 'step' | 'rng'>): DataSource | undefined {
  if (r && !r.rng.data) return replicaSource(plan, { ...o, seed: restartSeed(o.seed ?? 0, r.step) }, dpRank);
  const source = replicaSource(plan, o, dpRank);
  if (r?.rng.data) source?.restore(r.rng.data);
  return source;
}

/** Says a gathered checkpoint's notes and warnings on stderr (once per run: from one rank). */
export function announceResume(g: Pick<GatheredCheckpoint, 'notes' | 'warnings'>, write: (s: string) => void = (s) => process.stderr.write(s)): void {
  for (const n of g.notes) write(`note: ${n}\n`);
  for (const w of g.warnings) write(`warning: ${w}\n`);
}
