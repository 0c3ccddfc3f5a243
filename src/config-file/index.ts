// Reading and applying the config file in one step (start and `npm run apply`).
import type pg from 'pg';
import { withTransaction } from '../db/transaction.ts';
import { readConfigFile, formatProblem, type FileProblem } from './parse.ts';
import { applyConfig, ApplyError, formatReport, type ApplyReport } from './apply.ts';

export class ConfigFileError extends Error {
  readonly problems: FileProblem[];
  constructor(problems: FileProblem[]) {
    super(`${problems[0]?.file ?? 'the config file'} was not applied:\n${problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`);
    this.problems = problems;
  }
}

/** Validates and applies a config file; nothing is applied when anything is wrong. */
export async function applyConfigFile(pool: pg.Pool, file: string): Promise<ApplyReport> {
  const parsed = await readConfigFile(file);
  if (!parsed.ok) throw new ConfigFileError(parsed.problems);
  try {
    return await withTransaction(pool, (tx) => applyConfig(tx, parsed.value, file));
  } catch (err) {
    if (err instanceof ApplyError) throw new ConfigFileError(err.problems);
    throw err;
  }
}

export { formatReport };
