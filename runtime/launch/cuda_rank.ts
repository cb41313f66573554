import { CleaveError } from '../../src/core/errors.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import type { Plan } from '../../src/core/plan/types.js';
import type { HostPhases } from '../../src/core/plan/measured.js';
import { readPlan } from '../../src/core/plan/io.js';
import { rankWeightNames } from '../../src/core/plan/weights.js';
import { CudaComm } from '../backends/cuda/comm.js';
import { Cuda } from '../backends/cuda/device.js';
import { requireCuda } from '../backends/cuda/native.js';
import { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import { Executor } from '../executor/executor.js';
import { learningRate } from '../optim/optimizer.js';
import { ControlTransport } from '../transport/control.js';
import { type RunResult, type StepReport, stepReport } from './cpu.js';
import { planWeights, writeDeviceTrace } from './cuda.js';
import { finishCheckpoint, gatherShardSums, restoreFromShard, saveGpuShard, shareIdentity } from './cuda_checkpoint.js';
import { cleanCheckpointDir } from '../checkpoint/checkpoint.js';
import { rankStarted, rankFinished } from './processes.js';
import { announceResume, gatherCheckpoint, resumeDataSource } from '../checkpoint/resume.js';
import { stepFeeds } from './data.js';
import type { RunOptions } from './options.js';
import { rendezvous } from './rendezvous.js';
import type { WorldEnv } from './world.js';

/**
 * The CUDA settings a rank of a multi-rank plan needs, set in `env` before this process loads CUDA
 * (the driver reads them once); a user's setting that would let the ranks deadlock is refused.
 *
 * - CUDA_MODULE_LOADING=LAZY unless set, and then the rank runs its programs once on zeros before
 *   step 1 (`preloadKernels`): lazily, a kernel's first launch loads its module, and that waits for
 *   the device's queued work, NCCL kernels included, which wait for a peer that may be stuck the
 *   same way. Interleaved plans at pp 4 hung so in step 1 on 4 GPUs; preloaded, every test plan ran
 *   on 4 × H200. EAGER (set by the user) loads every kernel when CUDA starts instead, about 13 s
 *   more at each rank's start-up on an H200 host.
 * - CUDA_DEVICE_MAX_CONNECTIONS: every pair of ranks that exchange tensors and every group gets a
 *   stream of its own (CudaComm), spread over this many hardware queues (8 unless set); streams
 *   sharing a queue wait for each other's earlier work, a receive waiting for its peer holding up a
 *   send the peer needs, say. So a rank asks for CUDA's most, 32, unless set, and refuses fewer
 *   queues than its plan has streams.
 */
export function cudaEnvironment(plan: Plan, rank: number, env: NodeJS.ProcessEnv = process.env): void {
  const loading = env['CUDA_MODULE_LOADING'];
  if (loading === undefined) env['CUDA_MODULE_LOADING'] = 'LAZY';
  else if (!['EAGER', 'LAZY'].includes(loading.toUpperCase())) {
    throw new CleaveError(`CUDA_MODULE_LOADING=${loading}: CUDA knows EAGER and LAZY; unset it (LAZY, kernels preloaded) or set one of them`);
  } else env['CUDA_MODULE_LOADING'] = loading.toUpperCase(); // the driver's spelling
  const peers = new Set<string>();
  for (const r of plan.ranks) for (const ins of r.instructions) if (ins.kind === 'SEND' && (r.rank === rank || ins.peer === rank)) peers.add(`${r.rank}>${ins.peer}`);
  // Compute, one per pair and group, and NCCL's own two (its launch and host streams).
  const groups = plan.groups.filter((g) => g.ranks.includes(rank)).length;
  const needed = 1 + peers.size + groups + 2;
  const set = env['CUDA_DEVICE_MAX_CONNECTIONS'];
  if (needed > 32) process.stderr.write(`cleave: warning: rank ${rank}'s plan runs ${needed} streams and CUDA has at most 32 hardware queues: some share one\n`);
  if (set === undefined) {
    env['CUDA_DEVICE_MAX_CONNECTIONS'] = '32';
    return;
  }
  if (!(Number(set) >= Math.min(needed, 32))) {
    throw new CleaveError(`CUDA_DEVICE_MAX_CONNECTIONS=${set} gives rank ${rank} too few hardware queues: its plan runs ${needed} streams (compute, ${peers.size} rank pairs, ${groups} group${groups === 1 ? '' : 's'}, NCCL's 2), and streams sharing a queue can deadlock the ranks; unset it or set ${Math.min(needed, 32)} or more`);
  }
}

/** Whether this process loads CUDA modules lazily, CUDA's default (then a rank preloads its kernels before step 1). */
const lazyModules = (env: NodeJS.ProcessEnv = process.env): boolean => env['CUDA_MODULE_LOADING']?.toUpperCase() !== 'EAGER';

/**
 * One rank of a multi-GPU run, in its own process (started by `cleave run --gpus N`, torchrun,
 * Slurm or mpirun): takes the GPU of its local rank, meets the other ranks at MASTER_ADDR:PORT
 * (rank 0 shares the NCCL unique id), joins the world communicator, and runs its instruction list
 * with the CUDA backend, NCCL carrying tensors and the control plane the step's few numbers. Every
 * rank gets every step's report (the losses averaged over replicas, the global gradient norm). If
 * this rank or another fails, it says why (naming the failed rank), tells the others, and ends its
 * process at once with a non-zero code.
 */
export async function runCudaRank(o: RunOptions, world: WorldEnv, onStep?: (r: StepReport) => void, initialWeights?: (plan: Plan) => Map<string, Tensor>):
  Promise<RunResult & { stepMs: number[]; peakBytes: number; peakBytesByRank: number[] }> {
  // The launcher (launchProcesses) takes a rank that ends with code 0 but never says it finished for a failure.
  rankStarted();
  const plan = readPlan(o.planFile);
  if (plan.world.size !== world.worldSize) {
    throw new CleaveError(`${o.planFile} has ${plan.world.size} ranks (${plan.world.pp} pipeline × ${plan.world.dp} data parallel), but ${world.source} started ${world.worldSize} processes`);
  }
  cudaEnvironment(plan, world.rank);
  const n = requireCuda();
  const devices = n.info()?.devices ?? 0;
  if (world.localRank >= devices) throw new CleaveError(`rank ${world.rank} is local rank ${world.localRank}, but this host has ${devices} GPU${devices === 1 ? '' : 's'}`);
  n.setDevice(world.localRank);
  const rv = await rendezvous(world, () => n.ncclUniqueId(), (o.timeoutSeconds ?? 60) * 1000);
  const me = plan.ranks[world.rank]!;
  let comm: CudaComm | undefined;
  let backend: CudaRankBackend | undefined;
  let peerFailed: string | undefined;
  void rv.failure.then((f) => {
    peerFailed = `rank ${world.rank} stopped: rank ${f.rank} failed: ${f.message}`;
    backend?.stop(peerFailed);
  });
  try {
    const worldComm = n.ncclInit(rv.shared, world.worldSize, world.rank);
    comm = new CudaComm(n, plan, world.rank, worldComm);
    const transport = new ControlTransport(rv);
    const identity = await shareIdentity(transport, o);
    if (world.rank === 0 && o.checkpointDir) cleanCheckpointDir(o.checkpointDir);
    // Resumed: this rank's tensors, optimizer state and generators, gathered by name from the shards
    // that hold them (each read once), under whatever split wrote the checkpoint.
    const shard = o.resume ? gatherCheckpoint(o.resume, plan, world.rank) : undefined;
    if (shard && world.rank === 0) announceResume(shard);
    const weights = shard?.tensors ?? (initialWeights ? initialWeights(plan) : planWeights(plan, { planFile: o.planFile, from: o.weights }, rankWeightNames(plan, world.rank)));
    backend = new CudaRankBackend(plan, world.rank, weights, o.optimizer, new Cuda(n), { comm, transport });
    backend.launchLists = o.launchLists !== false;
    backend.cudaGraph = !!o.cudaGraph;
    backend.timing = !!o.trace;
    if (o.timeoutSeconds) backend.timeoutSeconds = o.timeoutSeconds;
    if (o.lossScale !== undefined) backend.setLossScale(o.lossScale);
    const exec = new Executor(plan, world.rank, backend, transport);
    const m = plan.schedule.microbatches, B = m * plan.model.microbatchSize;
    // Each replica draws its own data (seeded by its data-parallel rank), as CPU ranks do.
    const source = resumeDataSource(plan, o, me.dpRank, shard);
    const result: RunResult & { stepMs: number[]; peakBytes: number; peakBytesByRank: number[] } = { steps: [], checkpoints: [], stepMs: [], peakBytes: 0, peakBytesByRank: [] };
    if (shard) restoreFromShard(shard, backend);
    if (lazyModules()) backend.preloadKernels();
    n.memInfo(true);
    const everyone = [...Array(world.worldSize).keys()];
    const clock = (): number => performance.timeOrigin + performance.now();
    // With --trace, what the host did in the last step, beside its device times.
    let phases: HostPhases = [];
    if (o.trace) exec.phases = [];
    for (let step = shard?.step ?? 0; step < o.steps; step++) {
      const dataStart = clock();
      const feeds = stepFeeds(plan, o, source, me.dpRank, step);
      if (o.failAt?.rank === world.rank && (o.failAt.step ?? 1) === step + 1) exec.failAt = o.failAt.instruction;
      const t0 = performance.now();
      const lr = learningRate(o.optimizer.lr, step, o.schedule ?? { kind: 'constant' });
      const { losses, gradNorm } = await exec.trainStep(feeds, { lr, clip: o.clip });
      result.stepMs.push(performance.now() - t0);
      const reportStart = clock();
      // Every replica's losses, everywhere: each first pipeline rank adds its replica's.
      const all = new Float64Array(plan.world.dp * m);
      if (me.ppRank === 0) for (let k = 0; k < m; k++) all[me.dpRank * m + k] = losses.get(k) ?? NaN;
      await transport.allreduce(everyone, `losses of step ${step + 1}`, all);
      const perReplica = Array.from({ length: plan.world.dp }, (_, d) => Array.from(all.subarray(d * m, (d + 1) * m)));
      const report = stepReport(step + 1, perReplica, gradNorm, lr, B * plan.world.dp);
      result.steps.push(report);
      onStep?.(report);
      if (o.saveEvery && o.checkpointDir && (step + 1) % o.saveEvery === 0) {
        const { folder, sha256 } = saveGpuShard(o.checkpointDir, step + 1, world.rank, backend, source, identity);
        // The manifest only once every rank's shard is on disk: each tells rank 0 its shard's checksum.
        const sums = await gatherShardSums(transport, step + 1, sha256);
        if (sums) finishCheckpoint(folder, step + 1, o.planFile, plan, identity, sums, o.weights);
        result.checkpoints.push(folder);
      }
      if (exec.phases) phases = [{ name: 'data', start: dataStart, end: t0 + performance.timeOrigin }, ...exec.phases, { name: 'report', start: reportStart, end: clock() }];
    }
    if (o.trace && result.steps.length) {
      // Every rank's device times to rank 0, which writes the trace (all ranks on one host clock).
      const mine = { times: backend.deviceTimes(), phases };
      if (world.rank !== 0) transport.send(0, 'trace', new TextEncoder().encode(JSON.stringify(mine)));
      else {
        const all = [mine];
        for (let r = 1; r < world.worldSize; r++) all.push(JSON.parse(new TextDecoder().decode((await transport.recv(r, 'trace')) as Uint8Array)) as typeof mine);
        writeDeviceTrace(o.trace, plan, all.map((x) => x.times), all.map((x) => x.phases), n.info()?.name);
      }
    }
    result.peakBytes = backend.peakBytes();
    // Every rank's peak, everywhere (rank 0 reports them), and the step each rank reached: the run
    // succeeds only where every rank finished every step.
    const W = world.worldSize;
    const ends = new Float64Array(2 * W);
    ends[world.rank] = result.peakBytes;
    ends[W + world.rank] = Math.max(shard?.step ?? 0, o.steps);
    await transport.allreduce(everyone, 'peak memory', ends);
    result.peakBytesByRank = Array.from(ends.subarray(0, W));
    const short = [...ends.subarray(W)].findIndex((s) => s !== ends[W + world.rank]);
    if (short >= 0) throw new CleaveError(`rank ${short} ended at step ${ends[W + short]}, rank ${world.rank} at step ${ends[W + world.rank]}: the ranks did not run the same steps (give every rank the same --steps)`);
    if (o.returnWeights) result.weights = backend.tensors();
    backend.dispose();
    backend.dev.freeAll();
    comm.close(false);
    comm = undefined;
    rv.close();
    rankFinished();
    return result;
  } catch (e) {
    const why = peerFailed ?? (e instanceof Error ? e.message : String(e));
    const message = why.startsWith(`rank ${world.rank}`) ? why : `rank ${world.rank}: ${why}`;
    process.stderr.write(`cleave: ${message}\n`);
    // Tell the others (unless a peer's failure is what stopped this rank), then end the process at
    // once: its NCCL kernels wait on peers that will not come, and ncclCommAbort did not return
    // while kernels were queued behind another communicator's stuck transfer (seen on 2 × H200).
    // The driver drops the process's GPU work and its communicators with it.
    if (!peerFailed) await Promise.race([rv.abort(why), new Promise((r) => setTimeout(r, 1000))]);
    return n.exitNow(1);
  }
}

