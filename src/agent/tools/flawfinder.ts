// flawfinder (Debian package `flawfinder`): risky C/C++ calls (strcpy, sprintf, system, …)
// with their CWE. Its SARIF is passed through; it carries its own fingerprints
// (contextHash/v1) and snippets, and paths become relative to the repository.
import * as v from 'valibot';
import { detectSystemBinary, findExecutable } from './binaries.ts';
import { prepareSarif, readSarif, resultCount } from './sarif.ts';
import { checkoutOf, parseStepConfig, RepositoryPath, tail, ToolError, type ToolAdapter } from './tool.ts';

const Options = v.strictObject({
  /** Report hits of at least this risk level (0-5, flawfinder's default 1). */
  min_level: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(5))),
  /** Fewer false positives, a few true ones missed (--falsepositive). */
  false_positive: v.optional(v.boolean()),
  /** Directories or files to scan, relative to the repository; default all of it. */
  include: v.optional(v.pipe(v.array(RepositoryPath), v.minLength(1), v.maxLength(50))),
});

export const flawfinder: ToolAdapter = {
  name: 'flawfinder',
  scans: 'repository',
  detect: () => detectSystemBinary('flawfinder', 'flawfinder', ['--version'], /(\d+\.\d+(?:\.\d+)?)/, 'apt-get install -y flawfinder'),
  checkConfig: (stepConfig) => void parseStepConfig('flawfinder', Options, stepConfig),

  command(stepConfig, target) {
    const o = parseStepConfig('flawfinder', Options, stepConfig);
    const dir = checkoutOf(target, 'flawfinder');
    const argv = [findExecutable('flawfinder') ?? 'flawfinder', '--sarif'];
    if (o.min_level !== undefined) argv.push(`--minlevel=${o.min_level}`);
    if (o.false_positive) argv.push('--falsepositive');
    argv.push('--', ...(o.include ?? ['.']));
    return [{ argv, cwd: dir }];
  },

  parse(stdout, stderr, exitCode, ctx) {
    if (exitCode !== 0) throw new ToolError('tool_failed', `flawfinder exited with ${exitCode}: ${tail(stderr) || tail(stdout)}`, exitCode);
    const log = prepareSarif(readSarif('flawfinder', stdout, stderr, exitCode), { target: ctx.target, readSource: ctx.readSource });
    return { format: 'sarif', document: log, output: { hits: resultCount(log) } };
  },
};
