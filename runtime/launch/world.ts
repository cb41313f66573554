import { CleaveError } from '../../src/core/errors.js';

/** Where this process sits in a multi-process run, and how the processes find each other. */
export interface WorldEnv {
  rank: number;
  worldSize: number;
  /** Rank among the processes of this host (which GPU it takes). */
  localRank: number;
  /** Host and port rank 0 listens on for the rendezvous. */
  masterAddr: string;
  masterPort: number;
  /** The launcher whose variables said so. */
  source: 'torchrun' | 'slurm' | 'openmpi' | 'mpich';
}

export const DEFAULT_MASTER_PORT = 29500;

type Env = Readonly<Record<string, string | undefined>>;

/** A non-negative integer variable, or a CleaveError naming it. */
function intVar(env: Env, name: string): number {
  const v = env[name]!;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new CleaveError(`${name}=${v} is not a non-negative integer`);
  return n;
}

/** The first host of a Slurm node list: `gpu[03-05,07],cpu1` → `gpu03`. */
export function firstSlurmHost(list: string): string {
  const m = /^([^,[]+)(?:\[([^\]]+)\])?/.exec(list.trim());
  if (!m) throw new CleaveError(`SLURM_JOB_NODELIST=${list} is not a Slurm node list`);
  if (!m[2]) return m[1]!;
  const first = m[2].split(',')[0]!.split('-')[0]!;
  return `${m[1]}${first}`;
}

/**
 * The world from the variables a launcher sets, checked: torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
 * MASTER_ADDR, MASTER_PORT), Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the master is
 * MASTER_ADDR or the job's first node), Open MPI (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK) and
 * MPICH/Intel MPI (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID), in that order of precedence. Under MPI
 * the master is MASTER_ADDR (default this host, for one-host runs). Undefined when no launcher set
 * any of them (a single process).
 */
export function worldFromEnv(env: Env): WorldEnv | undefined {
  const port = (): number => {
    // CLEAVE_PORT wins; under a real torchrun agent (TORCHELASTIC_RUN_ID set) its own store holds
    // MASTER_PORT on the master host, so cleave's rendezvous takes the next port.
    const name = env['CLEAVE_PORT'] !== undefined ? 'CLEAVE_PORT' : env['MASTER_PORT'] !== undefined ? 'MASTER_PORT' : undefined;
    if (!name) return DEFAULT_MASTER_PORT;
    const p = intVar(env, name) + (name === 'MASTER_PORT' && env['TORCHELASTIC_RUN_ID'] !== undefined ? 1 : 0);
    if (p < 1 || p > 65535) throw new CleaveError(`${name}=${env[name]} is not a TCP port`);
    return p;
  };
  const make = (source: WorldEnv['source'], rankVar: string, sizeVar: string, localVar: string | undefined, addr: () => string): WorldEnv => {
    for (const v of [rankVar, sizeVar]) if (env[v] === undefined) throw new CleaveError(`${source}: ${v} is not set (the launcher sets ${rankVar} and ${sizeVar} together)`);
    const rank = intVar(env, rankVar), worldSize = intVar(env, sizeVar);
    if (worldSize < 1) throw new CleaveError(`${sizeVar}=${worldSize}: a world has at least one process`);
    if (rank >= worldSize) throw new CleaveError(`${rankVar}=${rank} is not below ${sizeVar}=${worldSize}`);
    const localRank = localVar && env[localVar] !== undefined ? intVar(env, localVar) : 0;
    return { rank, worldSize, localRank, masterAddr: addr(), masterPort: port(), source };
  };
  const master = (fallback?: () => string) => (): string => {
    const a = env['MASTER_ADDR'];
    if (a) return a;
    if (fallback) return fallback();
    throw new CleaveError('MASTER_ADDR is not set: the processes need the host where rank 0 listens');
  };
  if (env['RANK'] !== undefined || env['WORLD_SIZE'] !== undefined) return make('torchrun', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', master());
  if (env['SLURM_PROCID'] !== undefined) {
    return make('slurm', 'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', master(() => {
      const list = env['SLURM_JOB_NODELIST'] ?? env['SLURM_NODELIST'];
      if (!list) throw new CleaveError('slurm: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set');
      return firstSlurmHost(list);
    }));
  }
  if (env['OMPI_COMM_WORLD_RANK'] !== undefined) return make('openmpi', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK', master(() => '127.0.0.1'));
  if (env['PMI_RANK'] !== undefined) return make('mpich', 'PMI_RANK', 'PMI_SIZE', 'MPI_LOCALRANKID', master(() => '127.0.0.1'));
  return undefined;
}
