import { CleaveError } from '../../../src/core/errors.js';
import { type DType, dtypeFromOnnx, isFloat } from '../../../src/core/ir/dtype.js';
import type { Attrs } from '../../../src/core/ir/graph.js';
import { numel } from '../../../src/core/ir/shape.js';
import { type Tensor, tensor, tensorFromBytes } from '../../../src/core/ir/tensor.js';
import { type OpDef, getOp } from '../../../src/core/ops/index.js';
import type { DeviceTensor } from '../../../src/core/ops/registry.js';
import { planNodeSignature, policyDtype } from '../../../src/core/plan/signature.js';
import { attrsFromJson } from '../../../src/core/plan/attrs.js';
import { PROGRAMS, type StageProgram, readsBoundary } from '../../../src/core/plan/programs.js';
import type { Instruction, Plan, PlanStage } from '../../../src/core/plan/types.js';
import type { Backend, Feeds, OptimizerOptions } from '../../executor/backend.js';
import type { Transport } from '../../transport/transport.js';
import { type OptimizerConfig, type OptimizerState, Optimizer } from '../../optim/optimizer.js';
import { Cuda, deviceBytes, hostBytes } from './device.js';
import type { RankComm } from './comm.js';
import { runCudaNode } from './graph.js';
import { dropoutRng } from '../../../src/core/ops/movement.js';

/** A plan node ready to launch; `signature` keys its measured time (src/core/plan/signature.ts). */
interface Op { def: OpDef; name: string; attrs: Attrs; inputs: number[]; outputs: number[]; signature: string }
/** Elements per block of the multi-tensor AdamW. */
const ADAM_CHUNK = 65536;
/** A multi-tensor kernel's device tables (AdamW, the gradient norm): entries, chunks and their count. */
interface MultiTable { tensors: bigint; chunks: bigint; nchunks: number }

/**
 * One GPU running a single-rank plan: parameters stay on the device (float32 master weights, and a
 * bfloat16 compute copy under the bf16 policy), programs run node by node with the registry's CUDA
 * kernels, gradient contributions are summed in float32 on the device, and AdamW is one fused kernel
 * per parameter; the host only waits to read the step's losses. (Launch lists over the plan's arena
 * and CUDA graphs are the next step; multi-GPU plans come with NCCL.)
 */
export class CudaRankBackend implements Backend {
  readonly dev: Cuda;
  /** The 16-bit compute dtype of float tensors (bf16 and fp16 policies), or undefined under fp32. */
  private readonly compute16: 'bfloat16' | 'float16' | undefined;
  /**
   * Dynamic loss scaling (fp16 only): the backward seed is `lossScale` instead of 1, so small
   * gradients stay above float16's underflow; a step whose gradients overflow is skipped and the
   * scale halved; after `growthInterval` clean steps it doubles, up to 2^15 (the seed is itself a
   * float16 value, and float16 ends at 65504).
   */
  private lossScale = 1;
  static readonly MAX_LOSS_SCALE = 2 ** 15;
  readonly growthInterval = 2000;
  private cleanSteps = 0;
  /** Steps skipped because the scaled gradients overflowed. */
  skippedSteps = 0;
  private skippedInARow = 0;
  /** Halvings in a row after which fp16 training stops (2^15 down to below 2^-15). */
  static readonly MAX_SKIPS_IN_A_ROW = 30;
  private readonly programs = new Map<string, Op[]>();
  private readonly stages: PlanStage[];
  /** Compute copies of parameters, state and constants, by value index. */
  private readonly resident = new Map<number, DeviceTensor>();
  /** Float32 master weights (the compute copy itself under fp32). */
  private readonly master = new Map<number, DeviceTensor>();
  private readonly grads = new Map<number, DeviceTensor>();
  /** Parameters whose gradient this rank counts in the global norm (a tied one on its lowest pipeline rank). */
  private readonly owned = new Set<number>();
  private readonly moments = new Map<number, [DeviceTensor, DeviceTensor]>();
  private readonly env = new Map<number, Map<number, DeviceTensor>>();
  private readonly lossValues = new Map<number, DeviceTensor>();
  private hostOptimizer: Optimizer | undefined;
  private adamTable: MultiTable | undefined;
  private normTable: MultiTable | undefined;
  private adamStep = 0;
  /** Per program: after node i, the values (produced and last read inside it) that can go. */
  private readonly frees = new Map<string, number[][]>();
  /**
   * Per program: node index → the parameter whose float32 gradient accumulator that node adds its
   * output into directly (its registry `cudaAccumulate`: the weight-gradient GEMM with beta = 1),
   * where nothing else reads the gradient. Saves writing a 16-bit gradient, casting it and adding.
   */
  private readonly accumulates = new Map<string, Map<number, number>>();
  /**
   * Each program's static workspace (the plan's memory plan): one block per stage and program,
   * and the offset of every value that lives and dies inside the program. Those values are
   * written there instead of the pool; views alias them (the plan packs them by their aliases'
   * lifetimes too).
   */
  private readonly workspaces = new Map<string, { base: bigint; bytes: number; offsets: Map<number, number> }>();
  /** Bytes of the static workspaces (on top of the pool's peak). */
  get workspaceBytes(): number {
    return [...this.workspaces.values()].reduce((a, w) => a + w.bytes, 0);
  }
  /** How many nodes add their gradient straight into an accumulator (for reports and tests). */
  get directGradients(): number {
    return [...this.accumulates.values()].reduce((a, m) => a + m.size, 0);
  }
  /** For each microbatch, the rank's last instruction that uses its values (compute or send): they go after it. */
  private readonly lastCompute = new Map<number, Instruction>();
  /**
   * With `profiling` on, each node is timed on the device (CUDA events around it, read back after
   * its instruction): op signature (the cost model's key) → total ms and count.
   */
  readonly profile = new Map<string, { ms: number; count: number; op: string }>();
  profiling = false;
  /** Profiling: nodes timed but not read back yet, and event pairs to reuse. */
  private readonly timedNodes: { signature: string; op: string; events: [bigint, bigint] }[] = [];
  private readonly spareTimers: [bigint, bigint][] = [];
  /**
   * Whole-step CUDA graphs (`--cuda-graph`): step 1 runs eagerly (cuBLAS picks its algorithms, the
   * pool grows), step 2 is captured and launched, later steps only refill the feed buffers and
   * replay it. The optimizer stays outside the graph (its scalars change every step).
   */
  cudaGraph = false;
  private stepNo = 0;
  private exec: bigint | undefined;
  private capturing = false;
  /** Whether this step's graph has been launched (losses() launches it once). */
  private launched = false;
  private beforeCapture = new Set<bigint>();
  /**
   * Launch lists (on unless `--cuda-graph` or profiling): step 1 runs eagerly while the step arena
   * measures its allocations; step 2 places every step tensor in the arena (one static block at
   * fixed addresses) and records each compute instruction's kernels as a CUDA graph of its own;
   * from step 3 each instruction is one launch of its list, with no JavaScript per node. Plans with
   * random ops (a replay would repeat their draws) or host copies inside a step stay eager. On a
   * rank of a multi-rank plan, sends, receives and reductions stay outside the lists, on their
   * own streams, between the launches.
   */
  launchLists = true;
  private listPhase: 'off' | 'sizing' | 'recording' | 'replaying' = 'off';
  private readonly lists = new Map<string, bigint>();
  /**
   * Multi-rank launch lists: a replay runs no JavaScript per node, so it also makes no tensors; what
   * sends and receives need is taken from the recording step: where each receive's buffer sits in
   * the arena, and each microbatch's tensors after each recorded instruction.
   */
  private readonly recvPlaced = new Map<Instruction, DeviceTensor>();
  private readonly envAfter = new Map<string, Map<number, DeviceTensor>>();
  /** Per `stage:kind` of compute instruction: the received values its programs read. */
  private readonly receivedReads = new Map<string, number[]>();
  private listCapture = false;
  private arenaBase: bigint | undefined;
  /** Bytes of the step arena (0 without launch lists). */
  arenaBytes = 0;
  /** The pool's high-water mark before the arena took over (step 1, eager). */
  private poolPeakBeforeArena = 0;
  /** Each step's data, uploaded at its start into buffers at fixed addresses, by `microbatch:value`. */
  private readonly staticFeeds = new Map<string, DeviceTensor>();
  /** The data inputs this rank's programs read (what the feed buffers hold). */
  private allInputs: number[] = [];

  /**
   * Multi-rank plans: NCCL for boundary tensors and gradient reductions, and a host transport for
   * the few numbers every rank needs (the losses, the gradient norm).
   */
  private readonly multi: { comm: RankComm; transport: Transport } | undefined;
  /** The dtype each node output has on the device (the policy's, or float32 where an op keeps it). */
  private readonly deviceDtype = new Map<number, DType>();

  constructor(readonly plan: Plan, readonly rank: number, weights: ReadonlyMap<string, Tensor>, readonly optimizer: OptimizerConfig, dev?: Cuda,
    multi?: { comm: RankComm; transport: Transport }) {
    if (plan.world.size !== 1 && !multi) throw new CleaveError(`this plan has ${plan.world.size} ranks: run it with one process per GPU (cleave run --gpus ${plan.world.size})`);
    this.multi = multi;
    this.dev = dev ?? new Cuda();
    if (multi) {
      this.dev.holdFree = (ptr: bigint) => (this.holdsSentToEnd ? multi.comm.sent(ptr) : multi.comm.reading(ptr));
      // The factors reduced sums may still need, uploaded now: an upload waits for the stream,
      // which inside a step would wait for the reductions (and a dead peer) without polling.
      for (const b of plan.buckets) {
        const size = plan.groups[b.group]!.ranks.length;
        if (b.scale !== 1 && Math.abs(b.scale * size - 1) >= 1e-9 && !this.scalars.has(b.scale)) this.scalars.set(b.scale, this.dev.upload(tensor('float32', [], [b.scale])));
      }
    }
    this.compute16 = policyDtype(plan.model.dtypePolicy);
    if (this.compute16 === 'float16') {
      if (plan.model.lossSeedValue < 0) throw new CleaveError('fp16 training scales the loss gradient, and this plan (version 1) does not record where it starts: compile it again');
      this.lossScale = CudaRankBackend.MAX_LOSS_SCALE;
    }
    this.stages = plan.stages.filter((s) => s.ppRank === plan.ranks[rank]!.ppRank);
    const ops = plan.nodes.map((n) => {
      const attrs = attrsFromJson(n.attrs);
      return { def: getOp(n.op, `node '${n.name}'`), name: n.name, attrs, inputs: n.inputs, outputs: n.outputs, signature: planNodeSignature(plan, n, attrs) };
    });
    for (const op of ops) {
      op.outputs.forEach((v, i) => {
        const pv = plan.values[v]!;
        const d = dtypeFromOnnx(pv.dtype, pv.name);
        this.deviceDtype.set(v, op.def.keepDtype?.includes(i) ? d : this.as(d));
      });
    }
    for (const s of this.stages) {
      for (const k of ['forward', 'backwardB', 'backwardW'] as const) {
        this.programs.set(`${s.index}:${k}`, s[k].map((i) => ops[i]!));
        for (const i of s[k]) {
          const op = ops[i]!;
          if (!op.def.cuda) throw new CleaveError(`node '${op.name}': op ${op.def.op} has no CUDA kernel yet`);
          for (const v of op.inputs) if (v >= 0) this.load(v, weights);
        }
      }
      for (const g of s.grads) {
        this.load(g.param, weights);
        if (!this.grads.has(g.param)) this.grads.set(g.param, this.dev.alloc('float32', this.plan.values[g.param]!.shape));
      }
    }
    if (optimizer.kind !== 'adamw') this.hostOptimizer = new Optimizer(optimizer);
    const holders = new Map<number, number>();
    for (const s of plan.stages) for (const g of s.grads) holders.set(g.param, Math.min(holders.get(g.param) ?? Infinity, s.ppRank));
    const me = plan.ranks[rank]!;
    for (const p of this.grads.keys()) if (holders.get(p) === me.ppRank) this.owned.add(p);
    // Kept past their program: the loss, gradients, state updates, and boundary tensors (a send
    // reads them after the program that made them; they go with their microbatch).
    const outputs = new Set([plan.model.lossValue, ...plan.stages.flatMap((s) => [...s.grads.map((g) => g.value), ...s.states.map((x) => x.value)]), ...plan.tensors.map((t) => t.value)]);
    for (const [key, prog] of this.programs) {
      const inProg = new Set(prog.flatMap((op) => op.outputs));
      const readers = new Map<number, number>();
      prog.forEach((op, i) => op.inputs.forEach((v) => readers.set(v, i)));
      // A value produced here and read by no other program is freed after its last reader here.
      const readElsewhere = new Set<number>();
      for (const [k2, p2] of this.programs) if (k2 !== key) for (const op of p2) for (const v of op.inputs) if (inProg.has(v)) readElsewhere.add(v);
      const lists: number[][] = prog.map(() => []);
      for (const v of inProg) if (!readElsewhere.has(v) && !outputs.has(v) && readers.has(v)) lists[readers.get(v)!]!.push(v);
      this.frees.set(key, lists);
    }
    plan.ranks[rank]!.instructions.forEach((ins, i) => this.insIndex.set(ins, i));
    // A microbatch's last use on this rank: its last compute, or a send after it.
    for (const ins of plan.ranks[rank]!.instructions) if (PROGRAMS[ins.kind] || ins.kind === 'SEND') this.lastCompute.set(ins.mb, ins);
    const readAnywhere = new Set([...this.programs.values()].flatMap((prog) => prog.flatMap((op) => op.inputs)));
    for (const s of this.stages) {
      const paramOf = new Map(s.grads.map((g) => [g.value, g.param]));
      for (const k of ['forward', 'backwardB', 'backwardW'] as const) {
        const direct = new Map<number, number>();
        this.programs.get(`${s.index}:${k}`)!.forEach((op, i) => {
          const v = op.outputs[0]!;
          if (op.outputs.length === 1 && op.def.cudaAccumulate && paramOf.has(v) && !readAnywhere.has(v)) direct.set(i, paramOf.get(v)!);
        });
        this.accumulates.set(`${s.index}:${k}`, direct);
      }
    }
    // Version 3 plans pack workspaces with views as aliases, which is what this runtime does with
    // them; an older plan's slots could be reused while a view still reads them, so those values
    // come from the pool.
    for (const s of plan.version >= 3 ? this.stages : []) {
      for (const k of ['forward', 'backwardB', 'backwardW'] as const) {
        const ws = s.workspaces[k];
        if (!ws.bytes) continue;
        const base = this.dev.n.allocStatic(ws.bytes);
        const offsets = new Map(ws.slots.map((x) => [x.value, x.offset]));
        this.workspaces.set(`${s.index}:${k}`, { base, bytes: ws.bytes, offsets });
        // Slot memory is the workspace's: freeing a tensor there does nothing, views alias it.
        for (const off of offsets.values()) this.dev.external.add(base + BigInt(off));
      }
    }
    this.allInputs = [...new Set([...this.programs.values()].flatMap((prog) => prog.flatMap((op) => op.inputs.filter((v) => v >= 0 && plan.values[v]!.kind === 'input'))))];
  }

  private as(d: DType): DType {
    return this.compute16 && isFloat(d) ? this.compute16 : d;
  }

  private load(v: number, weights: ReadonlyMap<string, Tensor>): void {
    if (this.resident.has(v)) return;
    const pv = this.plan.values[v]!;
    const dtype = dtypeFromOnnx(pv.dtype, pv.name);
    if (pv.kind === 'const') {
      const t = pv.data && pv.data.length ? tensorFromBytes(dtype, pv.shape, pv.data, pv.name) : tensor(dtype, pv.shape);
      if (v === this.plan.model.lossSeedValue && this.compute16 === 'float16') t.data[0] = this.lossScale;
      this.resident.set(v, this.dev.upload(t, this.as(dtype)));
    } else if (pv.kind === 'param' || pv.kind === 'state') {
      const w = weights.get(pv.name);
      if (!w) throw new CleaveError(`the weights have no tensor '${pv.name}'`);
      const master = this.dev.upload(w, 'float32');
      this.master.set(v, master);
      let compute = master;
      if (this.compute16) {
        compute = this.dev.alloc(this.compute16, w.shape);
        this.dev.cast(master, compute);
      }
      this.resident.set(v, compute);
    }
  }

  beginStep(feeds: readonly Feeds[]): void {
    this.stepNo++;
    this.launched = false;
    if (this.cudaGraph && this.profiling) throw new CleaveError('profiling times each node on its own: it cannot run inside a captured CUDA graph');
    if (this.cudaGraph && this.timing) throw new CleaveError('--trace times instructions one by one, which a whole-step CUDA graph hides; run without --cuda-graph');
    if (this.timing) {
      // The device is idle between steps: the reference event runs when it is recorded.
      this.timeRef ??= { event: this.dev.n.eventCreate(true), host: 0 };
      this.dev.n.eventRecord(this.timeRef.event, 0n);
      this.timeRef.host = performance.timeOrigin + performance.now();
    }
    for (const g of this.grads.values()) this.dev.n.fill(0, g.ptr, numel(g.shape), 0);
    // The step's data goes up at once into buffers at fixed addresses: one wait for the copies per
    // step rather than one per microbatch, and what a captured step needs (a copy from the host
    // cannot happen while the stream records).
    this.stageFeeds(feeds);
    // Profiling times nodes one by one (synchronizing), which a recording cannot hold.
    if (this.profiling && this.listPhase !== 'off') this.stopLists();
    // A replay's microbatch tensors and losses live in the graph's memory (or the arena, where the
    // recorded lists write the losses at the addresses step 2 gave them).
    if (this.listPhase === 'recording') this.listPhase = 'replaying';
    // Memory last step's sends read is reused (a replay writes the arena) after they finish.
    this.multi?.comm.drainSends();
    if (this.exec !== undefined || this.listPhase === 'replaying') {
      // The recorded tensors stay where they are: the maps are refilled as the step goes.
      for (const e of this.env.values()) e.clear();
      return;
    }
    if (this.multi) this.dev.releaseHeld();
    for (const e of this.env.values()) for (const t of e.values()) this.dev.free(t);
    this.env.clear();
    for (const t of this.lossValues.values()) this.dev.free(t);
    this.lossValues.clear();
    this.advanceLists();
    if (this.cudaGraph && this.stepNo === 2) {
      const u = this.unreplayable();
      if (u) throw new CleaveError(`--cuda-graph: node '${u.op.name}' (${u.op.def.op}) ${u.why}; run without --cuda-graph`);
      this.beforeCapture = this.dev.livePointers();
      this.dev.n.graphBegin();
      this.capturing = true;
    }
  }

  /** Moves the launch lists on by one step: sizing (step 1), recording into the arena (step 2), replaying. */
  private advanceLists(): void {
    if (this.listPhase === 'off' && this.stepNo === 1 && this.launchLists && !this.cudaGraph && !this.profiling && !this.unreplayable()) {
      this.listPhase = 'sizing';
      this.dev.sizeArena();
    } else if (this.listPhase === 'sizing') {
      // Everything step 1 held is back in the pool: hand it to the driver, and the arena takes its place.
      this.dev.n.synchronize();
      this.poolPeakBeforeArena = this.dev.n.memInfo(true).peakBytes;
      this.arenaBytes = Math.max(256, this.dev.arenaHigh);
      this.arenaBase = this.dev.n.allocStatic(this.arenaBytes);
      this.dev.useArena(this.arenaBase, this.arenaBytes);
      this.listPhase = 'recording';
    }
  }

  /** Back to enqueueing node by node, from the pool: the recordings and the arena go. */
  private stopLists(): void {
    this.dropLists();
    this.dropArena();
    this.listPhase = 'off';
  }

  /** The recorded lists' graphs go. */
  private dropLists(): void {
    const lists = [...this.lists.values()];
    this.lists.clear();
    for (const l of lists) this.dev.n.graphDestroy(l);
  }

  /**
   * The step arena goes, and the tensors in it (a replayed step's losses) with it; a sizing arena
   * only stops measuring (its tensors are the pool's).
   */
  private dropArena(): void {
    const base = this.arenaBase;
    this.arenaBase = undefined;
    if (base !== undefined) {
      this.env.clear();
      this.lossValues.clear();
    }
    this.dev.endArena();
    if (base !== undefined) this.dev.n.freeStatic(base);
  }

  /**
   * The first node a recorded replay cannot hold, and why: a random op (a replay repeats its
   * kernels' arguments, so it would draw the same numbers every step), else a host copy.
   */
  private unreplayable(): { op: Op; why: string } | undefined {
    const ops = [...this.programs.values()].flat();
    const random = ops.find((op) => op.def.noFold);
    if (random) return { op: random, why: 'draws random numbers, which a replayed graph would repeat every step' };
    const host = ops.find((op) => op.def.cudaHostSync);
    if (host) return { op: host, why: 'copies between host and device inside the step, which a captured graph cannot' };
    return undefined;
  }

  /** What the device held at most: the pool's mark, the arena and the static workspaces. */
  peakBytes(): number {
    const pool = this.dev.n.memInfo().peakBytes;
    return Math.max(this.poolPeakBeforeArena, pool + this.arenaBytes) + this.workspaceBytes;
  }

  /** Copies each microbatch's data inputs into the captured step's fixed buffers (allocated on first use). */
  private stageFeeds(feeds: readonly Feeds[]): void {
    feeds.forEach((f, mb) => {
      for (const v of this.allInputs) {
        const name = this.plan.values[v]!.name;
        const t = f[name];
        if (!t) throw new CleaveError(`the batch has no input '${name}'`);
        const key = `${mb}:${v}`;
        const dtype = this.as(t.dtype);
        let d = this.staticFeeds.get(key);
        if (!d) {
          d = { ptr: this.dev.n.allocStatic(Math.max(1, numel(t.shape) * deviceBytes(dtype))), dtype, shape: [...t.shape] };
          this.dev.external.add(d.ptr);
          this.staticFeeds.set(key, d);
        } else if (d.dtype !== dtype || d.shape.length !== t.shape.length || d.shape.some((x, i) => x !== t.shape[i])) {
          throw new CleaveError(`input '${name}' changed from ${d.dtype}[${d.shape}] to ${dtype}[${t.shape}] between steps`);
        }
        this.dev.n.upload(d.ptr, hostBytes(t, d.dtype));
      }
    });
  }

  /**
   * The device tables of the multi-tensor AdamW (built at the first step: every pointer in them is
   * fixed for the backend's life): per parameter its master weight, gradient, moments, compute copy
   * and size; per block of ADAM_CHUNK elements the tensor and first element it updates.
   */
  private buildAdamTable(): MultiTable {
    return this.uploadTable([...this.grads].map(([p, g]) => {
      const w = this.master.get(p)!;
      let mv = this.moments.get(p);
      if (!mv) {
        mv = [this.dev.alloc('float32', w.shape), this.dev.alloc('float32', w.shape)];
        for (const x of mv) this.dev.n.fill(0, x.ptr, numel(w.shape), 0);
        this.moments.set(p, mv);
      }
      return [w.ptr, g.ptr, mv[0].ptr, mv[1].ptr, this.compute16 ? this.resident.get(p)!.ptr : 0n, BigInt(numel(w.shape))];
    }));
  }

  /** The same layout over the gradients this rank counts in the global norm (only `g` and the size are read). */
  private buildNormTable(): MultiTable {
    return this.uploadTable([...this.grads].filter(([p]) => this.owned.has(p)).map(([, g]) => [0n, g.ptr, 0n, 0n, 0n, BigInt(numel(g.shape))]));
  }

  /** Uploads six words per tensor (the last its size) and a (tensor, first element) pair per chunk of ADAM_CHUNK. */
  private uploadTable(entries: readonly (readonly bigint[])[]): MultiTable {
    const chunks: bigint[] = [];
    entries.forEach((e, t) => {
      for (let start = 0; start < Number(e[5]); start += ADAM_CHUNK) chunks.push(BigInt(t), BigInt(start));
    });
    const upload = (xs: readonly bigint[]): bigint => {
      const ptr = this.dev.n.allocStatic(Math.max(8, xs.length * 8));
      if (xs.length) this.dev.n.upload(ptr, BigInt64Array.from(xs));
      return ptr;
    };
    return { tensors: upload(entries.flat()), chunks: upload(chunks), nchunks: chunks.length / 2 };
  }

  /** The current loss scale (1 unless the plan trains in fp16). */
  get scale(): number {
    return this.lossScale;
  }

  /** Sets the fp16 loss scale (the backward seed's value on the device). */
  setLossScale(s: number): void {
    if (this.compute16 !== 'float16') throw new CleaveError('loss scaling applies to fp16 plans only');
    if (!(s > 0) || s > CudaRankBackend.MAX_LOSS_SCALE) throw new CleaveError(`the loss scale must be in (0, ${CudaRankBackend.MAX_LOSS_SCALE}]; got ${s}`);
    this.lossScale = s;
    const seed = this.resident.get(this.plan.model.lossSeedValue);
    if (seed) this.dev.n.upload(seed.ptr, hostBytes(tensor('float32', [], [s]), seed.dtype));
  }

  /** Frees what a captured graph and its feed buffers hold (the end of a run). */
  dispose(): void {
    // Each step runs even if another fails: the first failure is reported, the rest still frees.
    const steps: (() => void)[] = [
      // A capture that failed part-way must end before the stream can do anything else; what it
      // allocated went with it.
      () => {
        if (!this.capturing) return;
        this.capturing = false;
        this.dev.n.graphAbort();
        const before = this.beforeCapture;
        this.dev.forgetPointers([...this.dev.livePointers()].filter((p) => !before.has(p)));
      },
      // The graph's last losses are its allocations: free them, then the graph.
      () => {
        if (this.exec === undefined) return;
        for (const t of this.lossValues.values()) this.dev.n.free(t.ptr);
        this.lossValues.clear();
        const exec = this.exec;
        this.exec = undefined;
        this.dev.n.graphDestroy(exec);
      },
      () => {
        const evs = [...[...this.marks.values()].flat(), ...(this.timeRef ? [this.timeRef.event] : []), ...this.spareTimers.flat(), ...this.timedNodes.flatMap((t) => t.events)];
        this.marks.clear();
        this.timeRef = undefined;
        this.spareTimers.length = 0;
        this.timedNodes.length = 0;
        for (const ev of evs) this.dev.n.eventDestroy(ev);
      },
      () => {
        if (this.drainEvent === undefined) return;
        const ev = this.drainEvent;
        this.drainEvent = undefined;
        this.dev.n.eventDestroy(ev);
      },
      () => {
        if (!this.listCapture) return;
        this.listCapture = false;
        this.dev.n.graphAbort();
      },
      () => this.dropLists(),
      () => this.dropArena(),
      () => {
        const tables = [this.adamTable, this.normTable];
        this.adamTable = this.normTable = undefined;
        for (const t of tables) {
          if (!t) continue;
          this.dev.n.freeStatic(t.tensors);
          this.dev.n.freeStatic(t.chunks);
        }
      },
      () => {
        const all = [...this.workspaces.values()];
        this.workspaces.clear();
        for (const w of all) {
          for (const off of w.offsets.values()) this.dev.external.delete(w.base + BigInt(off));
          this.dev.n.freeStatic(w.base);
        }
      },
      () => {
        const all = [...this.staticFeeds.values()];
        this.staticFeeds.clear();
        for (const t of all) {
          this.dev.external.delete(t.ptr);
          this.dev.n.freeStatic(t.ptr);
        }
      },
    ];
    let first: unknown;
    for (const step of steps) {
      try {
        step();
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }


  private envOf(mb: number): Map<number, DeviceTensor> {
    let e = this.env.get(mb);
    if (!e) this.env.set(mb, (e = new Map()));
    return e;
  }

  async compute(ins: Instruction, feeds: Feeds): Promise<void> {
    if (this.exec !== undefined) return;
    const m = this.mark(ins);
    if (m) this.dev.n.eventRecord(m[0], 0n);
    this.enqueue(ins);
    if (m) this.dev.n.eventRecord(m[1], 0n);
  }

  private enqueue(ins: Instruction): void {
    const key = `${ins.kind}:${ins.stage}:${ins.mb}`;
    if (this.listPhase === 'replaying') {
      const list = this.lists.get(key);
      if (list === undefined) throw new CleaveError(`no launch list was recorded for ${ins.kind} of stage ${ins.stage}, microbatch ${ins.mb}`);
      this.awaitReceived(ins);
      this.dev.n.graphLaunch(list);
      const after = this.envAfter.get(key);
      if (after) this.env.set(ins.mb, new Map(after));
      return;
    }
    const recording = this.listPhase === 'recording';
    this.dev.arenaOpen = this.listPhase !== 'off';
    if (recording) {
      // A recording cannot wait for a transfer made outside it: the list's launch waits instead.
      this.awaitReceived(ins);
      // The arena is allocated already: nothing to hand back, so no wait for the stream.
      this.dev.n.graphBegin(false);
      this.listCapture = true;
    }
    try {
      this.computeNodes(ins);
    } finally {
      this.dev.arenaOpen = false;
    }
    if (recording) {
      this.listCapture = false;
      const list = this.dev.n.graphEnd();
      this.lists.set(key, list);
      if (this.multi) this.envAfter.set(key, new Map(this.envOf(ins.mb)));
      // Capturing only records: this step's work runs now.
      this.dev.n.graphLaunch(list);
    }
  }

  /** Enqueues one instruction's programs node by node. */
  private computeNodes(ins: Instruction): void {
    const env = this.envOf(ins.mb);
    const stage = this.plan.stages[ins.stage]!;
    const comm = this.multi?.comm;
    const read = (v: number): DeviceTensor | null => {
      if (v < 0) return null;
      const t = env.get(v) ?? this.resident.get(v);
      if (t) {
        // A received tensor's first reader is where compute waits for the transfer.
        if (comm?.arrive(t.ptr) && this.listCapture) throw new CleaveError(`the launch list of ${ins.kind} of stage ${ins.stage} reads '${this.plan.values[v]!.name}', received, without waiting for it first`);
        return t;
      }
      const pv = this.plan.values[v]!;
      if (this.preloading) {
        // What the instruction would receive or be fed: zeros of its type and shape.
        const host = tensor(dtypeFromOnnx(pv.dtype, pv.name), pv.shape);
        const z = this.dev.upload(host, this.deviceDtype.get(v) ?? this.as(host.dtype));
        env.set(v, z);
        return z;
      }
      if (pv.kind !== 'input') throw new CleaveError(`value '${pv.name}' of microbatch ${ins.mb} is not on this GPU`);
      const d = this.staticFeeds.get(`${ins.mb}:${v}`);
      if (!d) throw new CleaveError(`input '${pv.name}' of microbatch ${ins.mb} was not staged for this step`);
      env.set(v, d);
      return d;
    };
    const produced = new Set<number>();
    for (const k of PROGRAMS[ins.kind]!) {
      const frees = this.frees.get(`${ins.stage}:${k}`)!;
      const prog = this.programs.get(`${ins.stage}:${k}`)!;
      const direct = this.accumulates.get(`${ins.stage}:${k}`)!;
      const ws = this.workspaces.get(`${ins.stage}:${k}`);
      for (let oi = 0; oi < prog.length; oi++) {
        const op = prog[oi]!;
        // Device time, not host time around a synchronization: that would add a launch and a
        // synchronization to every node (14% over the one-GPU step of the benchmark GPT on an H200).
        const timer = this.profiling ? (this.spareTimers.pop() ?? [this.dev.n.eventCreate(true), this.dev.n.eventCreate(true)] as [bigint, bigint]) : undefined;
        if (timer) this.dev.n.eventRecord(timer[0], 0n);
        const inputs = op.inputs.map(read);
        const param = direct.get(oi);
        if (param !== undefined) {
          try {
            op.def.cudaAccumulate!(this.dev, inputs, this.grads.get(param)!, op.attrs);
          } catch (e) {
            throw new CleaveError(`node '${op.name}' (${op.def.op}) on CUDA, adding into its gradient accumulator: ${(e as Error).message}`);
          }
        } else {
          const types = op.outputs.map((v, i) => {
            const pv = this.plan.values[v]!;
            const d = dtypeFromOnnx(pv.dtype, pv.name);
            return { dtype: op.def.keepDtype?.includes(i) ? d : this.as(d), shape: pv.shape };
          });
          const placed = ws ? op.outputs.map((v, i) => {
            const off = ws.offsets.get(v);
            return off === undefined ? undefined : { ptr: ws.base + BigInt(off), dtype: types[i]!.dtype, shape: types[i]!.shape };
          }) : [];
          const outputs = runCudaNode(this.dev, op.def, op.name, inputs, types, op.attrs, placed);
          op.outputs.forEach((v, i) => {
            env.set(v, outputs[i]!);
            produced.add(v);
          });
        }
        if (timer) {
          this.dev.n.eventRecord(timer[1], 0n);
          this.timedNodes.push({ signature: op.signature, op: op.def.op, events: timer });
        }
        for (const v of frees[oi]!) {
          const t = env.get(v);
          if (t) {
            this.dev.free(t);
            env.delete(v);
          }
        }
      }
    }
    for (const g of stage.grads) {
      if (!produced.has(g.value)) continue;
      const part = env.get(g.value)!;
      const acc = this.grads.get(g.param)!;
      if (part.dtype === 'float32') this.dev.binary('add', acc, part, acc);
      else {
        const f = this.dev.alloc('float32', part.shape);
        this.dev.cast(part, f);
        this.dev.binary('add', acc, f, acc);
        this.dev.free(f);
      }
    }
    if (ins.kind === 'FORWARD') {
      for (const s of stage.states) {
        const t = env.get(s.value);
        if (!t) continue;
        const into = [this.master.get(s.state)!, ...(this.compute16 ? [this.resident.get(s.state)!] : [])];
        for (const d of into) {
          // Preloading launches the same casts into scratch memory: the states keep their values.
          const dst = this.preloading ? this.dev.alloc(d.dtype, d.shape) : d;
          this.dev.cast(t, dst);
          if (dst !== d) this.dev.free(dst);
        }
      }
      const loss = env.get(this.plan.model.lossValue);
      if (loss && produced.has(this.plan.model.lossValue)) this.lossValues.set(ins.mb, loss);
    }
    if (this.lastCompute.get(ins.mb) === ins) this.endMicrobatch(ins.mb);
    this.readTimers();
  }

  /** While `preloadKernels` runs: values an instruction would be given are zeros. */
  private preloading = false;

  /**
   * Runs each of this rank's programs once, on zeros, for a microbatch no step uses, with no
   * transfers, then waits for the device: every kernel a step's instructions launch is loaded
   * before any NCCL kernel can be in flight. Under lazy module loading (CUDA_MODULE_LOADING=LAZY) a
   * kernel's first launch waits for the device's queued work, and a peer's transfer stuck behind
   * it can deadlock the ranks; the optimizer's kernels, which come after every transfer of the
   * step is queued, need no preloading. Weights, states, the dropout stream and losses are left as
   * they were; the gradients the programs add into are zeroed at every step's start.
   */
  preloadKernels(): void {
    if (this.stepNo > 0) throw new CleaveError('kernels are preloaded before the first step');
    const DRY = -1;
    const rng = dropoutRng.state;
    this.preloading = true;
    try {
      const done = new Set<string>();
      for (const ins of this.plan.ranks[this.rank]!.instructions) {
        if (!PROGRAMS[ins.kind] || done.has(`${ins.kind}:${ins.stage}`)) continue;
        done.add(`${ins.kind}:${ins.stage}`);
        this.computeNodes({ ...ins, mb: DRY });
      }
      this.dev.n.synchronize();
    } finally {
      this.preloading = false;
      dropoutRng.state = rng;
      for (const t of this.env.get(DRY)?.values() ?? []) this.dev.free(t);
      this.env.delete(DRY);
      const loss = this.lossValues.get(DRY);
      if (loss) this.dev.free(loss);
      this.lossValues.delete(DRY);
    }
  }

  /** Adds the timed nodes' device times to the profile, once their work is done. */
  private readTimers(): void {
    if (!this.timedNodes.length) return;
    this.dev.n.synchronize();
    for (const { signature, op, events } of this.timedNodes) {
      const r = this.profile.get(signature) ?? { ms: 0, count: 0, op };
      r.ms += this.dev.n.eventElapsed(events[0], events[1]);
      r.count++;
      this.profile.set(signature, r);
      this.spareTimers.push(events);
    }
    this.timedNodes.length = 0;
  }

  /** The microbatch's last work on this rank is queued: everything it kept goes (but its loss). */
  private endMicrobatch(mb: number): void {
    const env = this.envOf(mb);
    // A replay made no tensors: the recording step's placement stands.
    if (this.listPhase === 'replaying') return void env.clear();
    const loss = this.lossValues.get(mb);
    for (const t of env.values()) {
      if (t === loss) continue;
      // Memory a receive may still be writing (a tensor no instruction read) is not reused before it lands.
      this.multi?.comm.arrive(t.ptr);
      this.dev.free(t);
    }
    env.clear();
  }

  /**
   * Whether memory a send read is held until the step starts again (or the capture ends), done or
   * not: under launch lists the arena must place every step's tensors alike, and a capture
   * (`--cuda-graph`) cannot ask whether an event it recorded has passed.
   */
  private get holdsSentToEnd(): boolean {
    return this.listPhase !== 'off' || this.capturing;
  }

  /** Memory held back for sends that have finished since goes back. */
  private reap(): void {
    if (this.holdsSentToEnd) return;
    const comm = this.multi?.comm;
    if (comm) this.dev.releaseHeld((p) => !comm.reading(p));
  }

  /**
   * With `timing` on, every instruction's device work sits between two timing events (on the
   * stream it runs on), read back as wall-clock times after the step: the measured trace.
   */
  timing = false;
  private readonly marks = new Map<number, [bigint, bigint]>();
  private timeRef: { event: bigint; host: number } | undefined;
  private readonly insIndex = new Map<Instruction, number>();

  private mark(ins: Instruction): [bigint, bigint] | undefined {
    if (!this.timing) return undefined;
    const i = this.insIndex.get(ins);
    if (i === undefined) return undefined;
    let m = this.marks.get(i);
    if (!m) this.marks.set(i, (m = [this.dev.n.eventCreate(true), this.dev.n.eventCreate(true)]));
    return m;
  }

  /**
   * When each instruction of the last step ran on the device, wall-clock ms (the executor's
   * format); null for instructions with no device work. Call after the step's work is done.
   */
  deviceTimes(): ([number, number] | null)[] {
    const ref = this.timeRef;
    const list = this.plan.ranks[this.rank]!.instructions;
    if (!ref) throw new CleaveError('no step was timed: set timing before the step');
    return list.map((_, i) => {
      const m = this.marks.get(i);
      return m ? [ref.host + this.dev.n.eventElapsed(ref.event, m[0]), ref.host + this.dev.n.eventElapsed(ref.event, m[1])] : null;
    });
  }

  /** Why a multi-rank run must stop (a peer failed), checked while the host waits for the device. */
  private stopReason: string | undefined;
  private drainEvent: bigint | undefined;
  /** Seconds a multi-rank step may wait for its transfers before the run stops (the NCCL timeout). */
  timeoutSeconds = 300;

  /** Stops a multi-rank run's waits: a peer failed. */
  stop(reason: string): void {
    this.stopReason = reason;
  }

  /**
   * Waits for the device by polling an event, so that the host stays free to hear of a peer's
   * failure (a blocking wait on a receive from a dead rank would never return), and NCCL's own
   * errors and the timeout are noticed.
   */
  async drain(): Promise<void> {
    if (!this.multi) return;
    // A whole-step graph ends and runs here: every rank comes here, only the last stage reads losses.
    this.launchStep();
    const n = this.dev.n;
    const ev = this.drainEvent ??= n.eventCreate();
    n.eventRecord(ev, 0n);
    const start = performance.now();
    for (let spins = 0; !n.eventQuery(ev); spins++) {
      if (this.stopReason) throw new CleaveError(this.stopReason);
      const e = this.multi.comm.asyncError();
      if (e) throw new CleaveError(`rank ${this.rank}: NCCL failed: ${e}`);
      if (performance.now() - start > this.timeoutSeconds * 1000) {
        throw new CleaveError(`rank ${this.rank}: the step's transfers did not finish within ${this.timeoutSeconds} s (--timeout); a peer may have stopped`);
      }
      // Spin briefly (a step's tail is short), then yield to the event loop between polls.
      if (spins > 100) await new Promise((r) => setTimeout(r, 1));
      else await new Promise((r) => setImmediate(r));
    }
  }

  private comm(what: string): RankComm {
    if (!this.multi) throw new CleaveError(`a one-rank plan has no ${what}`);
    return this.multi.comm;
  }

  async send(ins: Instruction): Promise<void> {
    const comm = this.comm('sends');
    // The step's graph sends it.
    if (this.exec !== undefined) return;
    const b = this.plan.tensors[ins.tensor]!;
    const t = this.env.get(ins.mb)?.get(b.value);
    if (!t) throw new CleaveError(`tensor ${ins.tensor} ('${this.plan.values[b.value]!.name}') of microbatch ${ins.mb} has not been computed on rank ${this.rank}`);
    // A received tensor passed on: its send starts after it arrived.
    comm.arrive(t.ptr);
    comm.send(t, ins.peer, this.mark(ins));
    if (this.lastCompute.get(ins.mb) === ins) this.endMicrobatch(ins.mb);
    this.reap();
  }

  async recv(ins: Instruction): Promise<void> {
    const comm = this.comm('receives');
    if (this.exec !== undefined) return;
    const b = this.plan.tensors[ins.tensor]!;
    const pv = this.plan.values[b.value]!;
    const dtype = this.deviceDtype.get(b.value) ?? this.as(dtypeFromOnnx(pv.dtype, pv.name));
    const env = this.envOf(ins.mb);
    if (this.listPhase === 'replaying') {
      // Into the buffer the recorded lists read it from.
      const t = this.recvPlaced.get(ins);
      if (!t) throw new CleaveError(`no receive of tensor ${ins.tensor}, microbatch ${ins.mb} was recorded on rank ${this.rank}`);
      env.set(b.value, t);
      return comm.recv(t, ins.peer, this.mark(ins));
    }
    // A value received again for the same microbatch (a plan that sends it twice) replaces the first.
    const old = env.get(b.value);
    if (old) {
      comm.arrive(old.ptr);
      this.dev.free(old);
    }
    // In the step arena under launch lists, where the recorded lists will read it every step.
    this.dev.arenaOpen = this.listPhase !== 'off';
    let t: DeviceTensor;
    try {
      t = this.dev.alloc(dtype, pv.shape);
    } finally {
      this.dev.arenaOpen = false;
    }
    env.set(b.value, t);
    if (this.listPhase === 'recording') this.recvPlaced.set(ins, t);
    await comm.recv(t, ins.peer, this.mark(ins));
    this.reap();
  }

  /** Compute waits for the received tensors `ins` reads (before its list runs or is recorded). */
  private awaitReceived(ins: Instruction): void {
    const comm = this.multi?.comm;
    if (!comm) return;
    const key = `${ins.stage}:${ins.kind}`;
    let values = this.receivedReads.get(key);
    if (!values) {
      values = [...new Set(this.plan.tensors.filter((b, id) => readsBoundary(this.plan, ins, id)).map((b) => b.value))];
      this.receivedReads.set(key, values);
    }
    const env = this.envOf(ins.mb);
    for (const v of values) {
      const t = env.get(v);
      if (t) comm.arrive(t.ptr);
    }
    // The microbatch's memory is reused after its last instruction: a receive no program read
    // must have landed first (a wait the list cannot hold).
    if (this.lastCompute.get(ins.mb) === ins) for (const t of env.values()) comm.arrive(t.ptr);
  }

  async allreduce(ins: Instruction): Promise<void> {
    const comm = this.comm('all-reduce');
    const bucket = this.plan.buckets[ins.bucket]!;
    const group = this.plan.groups[ins.group]!;
    const tensors = bucket.params.filter((p) => this.grads.has(p)).map((p) => this.grads.get(p)!);
    // Data-parallel buckets average (scale 1/replicas: NCCL's average); tied weights over replicas
    // sum over the group and divide by the replicas only, after the reduction (before the optimizer).
    const average = Math.abs(bucket.scale * group.ranks.length - 1) < 1e-9 && group.ranks.length > 1;
    if (!average && bucket.scale !== 1) for (const t of tensors) this.pendingScales.push([t, bucket.scale]);
    // The step's graph reduces them; the factor still comes before the optimizer, outside it.
    if (this.exec !== undefined) return;
    await comm.allreduce(group.id, tensors, average, this.mark(ins));
  }

  /** Gradients whose reduced sum still needs a factor (applied once the reductions are done). */
  private readonly pendingScales: [DeviceTensor, number][] = [];
  private readonly scalars = new Map<number, DeviceTensor>();

  private applyPendingScales(): void {
    const mul = getOp('Mul', 'gradient scaling').cuda!;
    for (const [t, k] of this.pendingScales.splice(0)) mul(this.dev, [t, this.scalars.get(k)!], [t], {});
  }

  /**
   * Ends the whole-step capture (step 2 of `--cuda-graph`) and launches the step's graph, once a
   * step. A multi-rank capture first joins the transfer and reduction streams back into the
   * compute stream (a capture must end where it forked) and frees what its sends read.
   */
  private launchStep(): void {
    if (this.capturing) {
      this.capturing = false;
      const before = this.beforeCapture;
      try {
        if (this.multi) {
          this.multi.comm.drainSends();
          void this.multi.comm.settle();
          this.dev.releaseHeld();
        }
        this.exec = this.dev.n.graphEnd();
      } finally {
        // What the step left allocated (its losses) is the graph's now, or gone with a failed capture.
        this.dev.forgetPointers([...this.dev.livePointers()].filter((p) => !before.has(p)));
      }
    }
    // One launch per step, however often the losses are read.
    if (this.exec !== undefined && !this.launched) {
      this.dev.n.graphLaunch(this.exec);
      this.launched = true;
    }
  }

  losses(): Map<number, number> {
    this.launchStep();
    const out = new Map<number, number>();
    for (const [mb, t] of this.lossValues) out.set(mb, this.dev.download(t).data[0]!);
    return out;
  }


  /**
   * The optimizer's state in the checkpoint format CPU ranks write (float64 buffers by parameter
   * name: AdamW's `exp_avg` and `exp_avg_sq`), so a GPU checkpoint resumes on CPU and back.
   */
  optimizerState(): OptimizerState {
    if (this.hostOptimizer) return this.hostOptimizer.state;
    const buffers: OptimizerState['buffers'] = {};
    for (const [p, [m, v]] of this.moments) {
      buffers[this.plan.values[p]!.name] = { exp_avg: Float64Array.from(this.dev.download(m).data), exp_avg_sq: Float64Array.from(this.dev.download(v).data) };
    }
    return { step: this.adamStep, buffers };
  }

  /** Continues from a checkpoint's optimizer state (before the first step). */
  restoreOptimizer(state: OptimizerState): void {
    if (this.hostOptimizer) {
      this.hostOptimizer.state.step = state.step;
      this.hostOptimizer.state.buffers = state.buffers;
      return;
    }
    if (this.adamTable) throw new CleaveError('the optimizer state is restored before the first step');
    this.adamStep = state.step;
    for (const p of this.grads.keys()) {
      const name = this.plan.values[p]!.name;
      const b = state.buffers[name];
      if (!b) continue;
      const shape = this.plan.values[p]!.shape;
      const moment = (key: string): DeviceTensor => {
        const data = b[key];
        if (!data || data.length !== numel(shape)) throw new CleaveError(`the checkpoint's ${key} of '${name}' has ${data?.length ?? 0} elements, not ${numel(shape)}`);
        return this.dev.upload(tensor('float32', shape, Float32Array.from(data)));
      };
      this.moments.set(p, [moment('exp_avg'), moment('exp_avg_sq')]);
    }
  }

  /** Parameters and state, downloaded (checkpoints, export, tests). */
  tensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [v, t] of this.master) out.set(this.plan.values[v]!.name, this.dev.download(t));
    return out;
  }

  async optimizerStep(o: OptimizerOptions): Promise<{ gradNorm: number }> {
    const m = this.plan.schedule.microbatches;
    const optIns = this.plan.ranks[this.rank]!.instructions.find((x) => x.kind === 'OPTIMIZER_STEP');
    // The update stays outside a captured step (its step count and learning rate change): the
    // capture ends here, and the step's graph is queued before it.
    this.launchStep();
    // The tables' uploads (at the first step) wait for the stream, which must not wait, unpolled,
    // for a peer: the device finishes the step's work first, while the host polls.
    if (!this.normTable || (this.optimizer.kind === 'adamw' && !this.adamTable)) await this.drain();
    const om = optIns ? this.mark(optIns) : undefined;
    if (om) this.dev.n.eventRecord(om[0], 0n);
    const nt = this.normTable ??= this.buildNormTable();
    if (this.optimizer.kind === 'adamw') this.adamTable ??= this.buildAdamTable();
    await this.multi?.comm.settle();
    this.applyPendingScales();
    // Global norm from one sum of squares over every gradient in one launch, one download. Over
    // several ranks, each counts the parameters it owns (a tied one on its lowest pipeline rank),
    // replicas split the sum, and the ranks add theirs up.
    const squares = this.dev.alloc('float32', []);
    this.dev.n.sumsqMulti(nt.tensors, nt.chunks, nt.nchunks, ADAM_CHUNK, squares.ptr);
    // Without clipping or fp16's overflow check the update does not depend on the norm: queue it
    // behind the squares, so the device is not left idle while the ranks add up the norm on the host.
    // Only the device AdamW: a host optimizer downloads, which would wait for the reductions unpolled.
    const early = o.clip === undefined && this.compute16 !== 'float16' && this.optimizer.kind === 'adamw';
    if (early) this.update(o, 1 / this.lossScale);
    await this.drain();
    let sq = this.dev.download(squares).data[0]!;
    this.dev.free(squares);
    if (this.multi) {
      const total = new Float64Array([sq / this.plan.world.dp]);
      await this.multi.transport.allreduce([...Array(this.plan.world.size).keys()], 'gradient norm', total);
      sq = total[0]!;
    }
    // Gradients carry the loss scale (1 outside fp16): the norm is of the true gradient.
    const scale = this.lossScale;
    const norm = Math.sqrt(sq) / m / scale;
    if (early) {
      if (om) this.dev.n.eventRecord(om[1], 0n);
      return { gradNorm: norm };
    }
    if (this.compute16 === 'float16') {
      if (!Number.isFinite(norm)) {
        // Overflow somewhere in the scaled backward pass: skip the update, try a smaller scale.
        this.skippedSteps++;
        this.cleanSteps = 0;
        if (++this.skippedInARow > CudaRankBackend.MAX_SKIPS_IN_A_ROW) {
          throw new CleaveError(`fp16: ${this.skippedInARow - 1} steps in a row had non-finite gradients down to a loss scale of ${this.lossScale}: the model makes inf or NaN even unscaled (a constant beyond float16's ±65504, or a real divergence)`);
        }
        this.setLossScale(this.lossScale / 2);
        if (om) this.dev.n.eventRecord(om[1], 0n);
        return { gradNorm: norm };
      }
      this.skippedInARow = 0;
      if (++this.cleanSteps >= this.growthInterval && this.lossScale < CudaRankBackend.MAX_LOSS_SCALE) {
        this.cleanSteps = 0;
        this.setLossScale(this.lossScale * 2);
      }
    }
    this.update(o, (o.clip !== undefined ? Math.min(1, o.clip / (norm + 1e-6)) : 1) / scale);
    if (om) this.dev.n.eventRecord(om[1], 0n);
    return { gradNorm: norm };
  }

  /** Applies the optimizer to every owned parameter, gradients times `clip` (clipping and loss scale) ÷ microbatches. */
  private update(o: OptimizerOptions, clip: number): void {
    const m = this.plan.schedule.microbatches;
    if (this.optimizer.kind === 'adamw') {
      const c = this.optimizer;
      const t = ++this.adamStep;
      const b1 = c.beta1 ?? 0.9, b2 = c.beta2 ?? 0.999;
      const table = this.adamTable ?? (this.adamTable = this.buildAdamTable());
      // Every parameter (and its 16-bit compute copy) in one launch.
      this.dev.n.adamwMulti(table.tensors, table.chunks, table.nchunks, ADAM_CHUNK, this.compute16 === 'float16' ? 2 : 1, o.lr, b1, b2, c.eps ?? 1e-8, c.weightDecay ?? 0,
        1 - b1 ** t, 1 - b2 ** t, clip / m);
    } else {
      // Other optimizers update on the host: correct, and the slow path until they get kernels.
      const slots = [...this.grads].map(([p, g]) => {
        const grad = Float64Array.from(this.dev.download(g).data, (x) => (x * clip) / m);
        return { p, name: this.plan.values[p]!.name, value: this.dev.download(this.master.get(p)!).data as Float32Array, grad };
      });
      this.hostOptimizer!.step(slots, o.lr);
      for (const s of slots) {
        this.dev.n.upload(this.master.get(s.p)!.ptr, s.value);
        if (this.compute16) this.dev.cast(this.master.get(s.p)!, this.resident.get(s.p)!);
      }
    }
  }
}
