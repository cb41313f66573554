/**
 * Errors a user can act on. The CLI prints only the message (exit code 2); anything else is a bug
 * and gets a stack trace.
 */
export class CleaveError extends Error {
  override readonly name = 'CleaveError';
  /** Set where the command's own --json output already carries this error (one object, not two). */
  inJsonReport = false;
  constructor(message: string) {
    super(message);
  }
}

/** Thrown where a shape computation needs a value of a dimension that is still symbolic. */
export class SymbolicDimError extends CleaveError {}

/** A name read from a file, fit for a one-line message: control characters (line breaks too) written as \uXXXX. */
export const visible = (s: string): string => s.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
