// eslint (npm) with eslint-plugin-security and our rule set (eslint-security.config.js): SAST
// for JavaScript and TypeScript. Given --config, eslint never loads the repository's own
// config (code we would run); --no-inline-config, so a comment in the scanned code cannot
// switch a security rule off. SARIF (@microsoft/eslint-formatter-sarif) is passed through;
// files eslint could not parse are counted in the output (`files_not_parsed`), not findings.
import * as v from 'valibot';
import { fileURLToPath } from 'node:url';
import { agentFile, detectProjectBin, nodeScript, projectBin } from './binaries.ts';
import { prepareSarif, readSarif, relativeUri, resultCount } from './sarif.ts';
import { checkoutOf, parseStepConfig, RepositoryPath, tail, ToolError, type ToolAdapter } from './tool.ts';

export const ESLINT_SECURITY_RULES = [
  'no-implied-eval', 'no-new-func', 'no-script-url',
  'security/detect-buffer-noassert', 'security/detect-child-process', 'security/detect-disable-mustache-escape',
  'security/detect-eval-with-expression', 'security/detect-new-buffer', 'security/detect-no-csrf-before-method-override',
  'security/detect-non-literal-fs-filename', 'security/detect-non-literal-regexp', 'security/detect-non-literal-require',
  'security/detect-possible-timing-attacks', 'security/detect-pseudoRandomBytes', 'security/detect-unsafe-regex',
  'security/detect-bidi-characters', 'security/detect-invisible-characters',
] as const;

const Options = v.strictObject({
  /** Files or directories to lint, relative to the repository; default all of it. */
  include: v.optional(v.pipe(v.array(RepositoryPath), v.minLength(1), v.maxLength(50))),
  /** Rules of our set to leave out (a noisy one in this codebase). */
  disable_rules: v.optional(v.pipe(v.array(v.picklist(ESLINT_SECURITY_RULES, `must be one of ${ESLINT_SECURITY_RULES.join(', ')}`)), v.maxLength(ESLINT_SECURITY_RULES.length))),
});

function formatterPath(): string | null {
  try {
    return fileURLToPath(import.meta.resolve('@microsoft/eslint-formatter-sarif'));
  } catch {
    return null;
  }
}

export const eslint: ToolAdapter = {
  name: 'eslint',
  scans: 'repository',
  detect: async () => {
    const d = detectProjectBin('eslint', 'eslint', 'eslint');
    if (d.available && !formatterPath()) {
      return { tool: 'eslint', available: false, reason: '@microsoft/eslint-formatter-sarif is missing', install: 'npm install (in the scanflow directory)' };
    }
    return d;
  },
  checkConfig: (stepConfig) => void parseStepConfig('eslint', Options, stepConfig),

  command(stepConfig, target) {
    const o = parseStepConfig('eslint', Options, stepConfig);
    const dir = checkoutOf(target, 'eslint');
    const script = projectBin('eslint');
    const formatter = formatterPath();
    if (!script || !formatter) throw new ToolError('tool_missing', 'eslint or its SARIF formatter is not installed; run npm install');
    const args = [
      '--config', agentFile('tools/eslint-security.config.js'),
      '--format', formatter,
      '--no-inline-config', '--no-warn-ignored', '--no-error-on-unmatched-pattern',
    ];
    if (o.disable_rules?.length) args.push('--rule', JSON.stringify(Object.fromEntries(o.disable_rules.map((r) => [r, 'off']))));
    args.push('--', ...(o.include ?? ['.']));
    return [{ argv: nodeScript(script, args), cwd: dir }];
  },

  parse(stdout, stderr, exitCode, ctx) {
    // 0: no errors, 1: errors found, 2: eslint itself failed (bad config, crash).
    if (exitCode !== 0 && exitCode !== 1) {
      throw new ToolError('tool_failed', `eslint exited with ${exitCode}: ${tail(stderr) || tail(stdout)}`, exitCode);
    }
    const log = prepareSarif(readSarif('eslint', stdout, stderr, exitCode), { target: ctx.target, readSource: ctx.readSource });
    const checkout = ctx.target.kind === 'repository' ? ctx.target.dir : null;
    const notParsed = log.runs.flatMap((run) => (run.invocations ?? []).flatMap((inv) => inv.toolConfigurationNotifications ?? []))
      .map((n) => {
        const uri = n.locations?.[0]?.physicalLocation?.artifactLocation?.uri;
        return { path: uri ? relativeUri(uri, checkout) : null, message: n.message.text ?? '' };
      });
    for (const run of log.runs) {
      for (const inv of run.invocations ?? []) {
        for (const n of inv.toolConfigurationNotifications ?? []) {
          const loc = n.locations?.[0]?.physicalLocation?.artifactLocation;
          if (loc?.uri) loc.uri = relativeUri(loc.uri, checkout);
        }
      }
    }
    return {
      format: 'sarif',
      document: log,
      output: {
        problems: resultCount(log),
        files_scanned: log.runs.reduce((n, r) => n + (r.artifacts?.length ?? 0), 0),
        files_not_parsed: notParsed,
      },
    };
  },
};
