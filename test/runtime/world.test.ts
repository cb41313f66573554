import { describe, expect, it } from 'vitest';
import { firstSlurmHost, worldFromEnv } from '../../runtime/launch/world.js';

describe('the world from launcher variables', () => {
  it('reads torchrun, Slurm, Open MPI and MPICH, each as its launcher sets them', () => {
    expect(worldFromEnv({ RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '3', MASTER_ADDR: 'node0', MASTER_PORT: '29400' }))
      .toEqual({ rank: 3, worldSize: 8, localRank: 3, masterAddr: 'node0', masterPort: 29400, source: 'torchrun' });
    expect(worldFromEnv({ SLURM_PROCID: '5', SLURM_NTASKS: '16', SLURM_LOCALID: '1', SLURM_JOB_NODELIST: 'gpu[03-05,07]' }))
      .toEqual({ rank: 5, worldSize: 16, localRank: 1, masterAddr: 'gpu03', masterPort: 29500, source: 'slurm' });
    expect(worldFromEnv({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_LOCAL_RANK: '1' }))
      .toEqual({ rank: 1, worldSize: 2, localRank: 1, masterAddr: '127.0.0.1', masterPort: 29500, source: 'openmpi' });
    expect(worldFromEnv({ PMI_RANK: '0', PMI_SIZE: '4', MASTER_ADDR: 'h1' })).toEqual({ rank: 0, worldSize: 4, localRank: 0, masterAddr: 'h1', masterPort: 29500, source: 'mpich' });
    expect(worldFromEnv({ PATH: '/usr/bin' })).toBeUndefined();
    // torchrun's variables win over the scheduler's around them.
    expect(worldFromEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_ADDR: 'a', SLURM_PROCID: '7', SLURM_NTASKS: '9' })!.source).toBe('torchrun');
  });

  it('finds the first host of a Slurm node list', () => {
    expect(firstSlurmHost('node07')).toBe('node07');
    expect(firstSlurmHost('gpu[12-15],cpu1')).toBe('gpu12');
    expect(firstSlurmHost('a[1,3,5]')).toBe('a1');
  });

  it('names the variable that is missing or wrong', () => {
    expect(() => worldFromEnv({ RANK: '0', MASTER_ADDR: 'x' })).toThrow(/torchrun: WORLD_SIZE is not set \(the launcher sets RANK and WORLD_SIZE together\)/);
    expect(() => worldFromEnv({ RANK: 'one', WORLD_SIZE: '2', MASTER_ADDR: 'x' })).toThrow(/RANK=one is not a non-negative integer/);
    expect(() => worldFromEnv({ RANK: '2', WORLD_SIZE: '2', MASTER_ADDR: 'x' })).toThrow(/RANK=2 is not below WORLD_SIZE=2/);
    expect(() => worldFromEnv({ RANK: '0', WORLD_SIZE: '0', MASTER_ADDR: 'x' })).toThrow(/WORLD_SIZE=0: a world has at least one process/);
    expect(() => worldFromEnv({ RANK: '0', WORLD_SIZE: '2' })).toThrow(/MASTER_ADDR is not set/);
    expect(() => worldFromEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: 'x', MASTER_PORT: '70000' })).toThrow(/MASTER_PORT=70000 is not a TCP port/);
    // Under a torchrun agent its store holds MASTER_PORT: the rendezvous takes the next one, and
    // CLEAVE_PORT overrides both.
    expect(worldFromEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: 'x', MASTER_PORT: '29500', TORCHELASTIC_RUN_ID: 'job' })!.masterPort).toBe(29501);
    expect(worldFromEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: 'x', MASTER_PORT: '29500', CLEAVE_PORT: '31000', TORCHELASTIC_RUN_ID: 'job' })!.masterPort).toBe(31000);
    expect(() => worldFromEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: 'x', CLEAVE_PORT: '0' })).toThrow(/CLEAVE_PORT=0 is not a TCP port/);
    expect(() => worldFromEnv({ SLURM_PROCID: '0', SLURM_NTASKS: '2' })).toThrow(/slurm: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set/);
    expect(() => worldFromEnv({ SLURM_PROCID: '0', SLURM_NTASKS: '2', SLURM_JOB_NODELIST: '[bad' })).toThrow(/SLURM_JOB_NODELIST=\[bad is not a Slurm node list/);
  });
});
