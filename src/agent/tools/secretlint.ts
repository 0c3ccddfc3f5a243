// secretlint (npm, with its recommended preset and SARIF formatter): secrets committed to a
// repository (cloud keys, tokens, private keys, credentials in URLs). Secrets are masked in
// its messages. The SARIF is passed through, with every rule tagged `secret` (the server maps
// results of such rules to findings of type `secret`) and secretlint's placeholder rule
// description ("secretlint rule(<id>) error") dropped, so the title is the result's message
// ("found AWS Secret Access Key: ****…").
import * as v from 'valibot';
import type { Log as SarifLog } from 'sarif';
import { agentFile, detectProjectBin, nodeScript, packageVersion, projectBin } from './binaries.ts';
import { prepareSarif, readSarif, resultCount } from './sarif.ts';
import { checkoutOf, parseStepConfig, RepositoryPath, tail, ToolError, type ToolAdapter } from './tool.ts';

const Options = v.strictObject({
  /** Globs of files to scan, relative to the repository; default every file ("**\/*"). */
  include: v.optional(v.pipe(v.array(RepositoryPath), v.minLength(1), v.maxLength(50))),
});

export const secretlint: ToolAdapter = {
  name: 'secretlint',
  scans: 'repository',
  detect: async () => detectProjectBin('secretlint', 'secretlint', 'secretlint'),
  checkConfig: (stepConfig) => void parseStepConfig('secretlint', Options, stepConfig),

  command(stepConfig, target) {
    const o = parseStepConfig('secretlint', Options, stepConfig);
    const dir = checkoutOf(target, 'secretlint');
    const script = projectBin('secretlint');
    if (!script) throw new ToolError('tool_missing', 'secretlint is not installed (node_modules/.bin/secretlint); run npm install');
    const args = [
      '--secretlintrc', agentFile('tools/secretlintrc.json'),
      '--format', '@secretlint/secretlint-formatter-sarif',
      '--no-color', '--no-terminalLink',
      ...(o.include ?? ['**/*']),
    ];
    return [{ argv: nodeScript(script, args), cwd: dir }];
  },

  parse(stdout, stderr, exitCode, ctx) {
    // 0: nothing found, 1: secrets found, 2: secretlint itself failed, or (its words) "Not
    // found target files": a repository with no file to scan has no secret in it.
    if (exitCode === 2 && /Not found target files/.test(stderr)) {
      const empty: SarifLog = { version: '2.1.0', runs: [{ tool: { driver: { name: 'secretlint', version: packageVersion('secretlint') ?? undefined, rules: [] } }, results: [] }] };
      return { format: 'sarif', document: prepareSarif(empty, { target: ctx.target, readSource: ctx.readSource }), output: { secrets_found: 0, files: [] } };
    }
    if (exitCode !== 0 && exitCode !== 1) {
      throw new ToolError('tool_failed', `secretlint exited with ${exitCode}: ${tail(stderr) || tail(stdout)}`, exitCode);
    }
    const log = prepareSarif(readSarif('secretlint', stdout, stderr, exitCode), {
      target: ctx.target, readSource: ctx.readSource, ruleTags: ['secret', 'security'],
    });
    dropPlaceholderDescriptions(log);
    // The SARIF formatter writes its own "1.0.0" as the driver's version.
    for (const run of log.runs) run.tool.driver.version = packageVersion('secretlint') ?? run.tool.driver.version;
    const files = new Set(log.runs.flatMap((r) => (r.results ?? []).map((x) => x.locations?.[0]?.physicalLocation?.artifactLocation?.uri ?? '')));
    files.delete('');
    return { format: 'sarif', document: log, output: { secrets_found: resultCount(log), files: [...files].sort() } };
  },
};

function dropPlaceholderDescriptions(log: SarifLog): void {
  for (const run of log.runs) {
    for (const rule of run.tool.driver.rules ?? []) {
      if (rule.shortDescription?.text && /^secretlint rule\(.*\) error$/.test(rule.shortDescription.text)) delete rule.shortDescription;
    }
  }
}
