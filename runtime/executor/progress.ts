// Where each rank of a CPU run is, in memory every thread of the run shares: the watchdog's view.
//
// Each rank's thread stamps a heartbeat from its event loop (HEARTBEAT_MS apart) and its executor
// publishes the step and instruction it is at. A rank whose heartbeat stops while it is inside a
// step is stuck in synchronous work — a kernel that loops, say — and only a watchdog outside it can
// stop it; a rank waiting for messages keeps beating, and its receives' timeouts bound the wait.

/** How often a rank's event loop stamps its heartbeat (ms). */
export const HEARTBEAT_MS = 100;
/** A heartbeat this old (ms) means the rank's thread is busy, not waiting. */
export const BUSY_MS = 4 * HEARTBEAT_MS;

const SLOTS = 4;
const BEAT = 0, STEP = 1, INSTRUCTION = 2, IN_STEP = 3;

/** What the board says of one rank. */
export interface RankProgress {
  /** The step it is in (1-based) and the instruction it is at (its index in the rank's list; -1 before the first). */
  step: number;
  instruction: number;
  /** Inside a step (between steps a rank loads data and saves checkpoints, which the watchdog leaves alone). */
  inStep: boolean;
  /** How long ago its thread last stamped its heartbeat (ms). */
  quietMs: number;
}

/**
 * One Int32 slot group per rank over a SharedArrayBuffer (Atomics, so no torn reads across
 * threads). Times are ms since `epoch` (a wall-clock ms every thread of the process agrees on).
 */
export class ProgressBoard {
  private readonly cells: Int32Array;

  constructor(readonly buffer: SharedArrayBuffer, readonly epoch: number) {
    this.cells = new Int32Array(buffer);
  }

  static create(ranks: number): ProgressBoard {
    const board = new ProgressBoard(new SharedArrayBuffer(ranks * SLOTS * 4), now());
    for (let r = 0; r < ranks; r++) {
      board.beat(r);
      Atomics.store(board.cells, r * SLOTS + INSTRUCTION, -1);
    }
    return board;
  }

  get ranks(): number {
    return this.cells.length / SLOTS;
  }

  private since(): number {
    return Math.round(now() - this.epoch);
  }

  beat(rank: number): void {
    Atomics.store(this.cells, rank * SLOTS + BEAT, this.since());
  }

  /** Rank `rank` is at `instruction` of `step`. */
  at(rank: number, step: number, instruction: number): void {
    const o = rank * SLOTS;
    Atomics.store(this.cells, o + STEP, step);
    Atomics.store(this.cells, o + INSTRUCTION, instruction);
    Atomics.store(this.cells, o + IN_STEP, 1);
    this.beat(rank);
  }

  /** Rank `rank` left its step (done with it, or failed). */
  leave(rank: number): void {
    Atomics.store(this.cells, rank * SLOTS + IN_STEP, 0);
    this.beat(rank);
  }

  read(rank: number): RankProgress {
    const o = rank * SLOTS;
    return {
      step: Atomics.load(this.cells, o + STEP), instruction: Atomics.load(this.cells, o + INSTRUCTION),
      inStep: Atomics.load(this.cells, o + IN_STEP) === 1, quietMs: this.since() - Atomics.load(this.cells, o + BEAT),
    };
  }

  /** Some rank's thread has been stuck inside a step for BUSY_MS or more (its waits on others are not lost messages). */
  someoneBusy(): boolean {
    for (let r = 0; r < this.ranks; r++) {
      const p = this.read(r);
      if (p.inStep && p.quietMs >= BUSY_MS) return true;
    }
    return false;
  }

  /**
   * Stamps `rank`'s heartbeat from this thread's event loop until stopped; the timer does not keep
   * the thread alive (a rank that has nothing left to do must still end).
   */
  startHeartbeat(rank: number): () => void {
    this.beat(rank);
    const t = setInterval(() => this.beat(rank), HEARTBEAT_MS);
    t.unref();
    return () => clearInterval(t);
  }
}

const now = (): number => performance.timeOrigin + performance.now();

/** An executor's view of the board: its rank's slot, the step the worker is in. */
export interface StepProgress {
  /** At instruction `i` of the current step. */
  at(i: number): void;
  /** Out of the step. */
  leave(): void;
}

/** Publishes `rank`'s place on `board`; `step()` says which step it is in. */
export function rankProgress(board: ProgressBoard, rank: number, step: () => number): StepProgress {
  return { at: (i) => board.at(rank, step(), i), leave: () => board.leave(rank) };
}
