// The tools file: validated with the file, the entry and the field in every error;
// placeholders replaced inside argv elements; a declared tool whose program is missing is
// kept, and says so.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BUILTIN_TOOL_NAMES, loadToolbox, detectTools, availableTools } from '../src/agent/toolbox.ts';
import { loadToolsFile, parseToolsFile, placeholderValues, substitute } from '../src/agent/tools-file.ts';
import type { HostTarget, RepositoryTarget } from '../src/agent/targets.ts';
import { ToolError } from '../src/agent/tools/tool.ts';

const FILE = '/etc/scanflow/tools.yaml';
const parse = (yaml: string) => parseToolsFile(yaml, FILE, BUILTIN_TOOL_NAMES);

const repo: RepositoryTarget = {
  kind: 'repository', asset: { type: 'repository', name: 'r' }, url: 'file:///r', dir: '/w/checkout',
  branch: { name: 'main', is_default_branch: true, commit_sha: 'c'.repeat(40) },
};
const web: HostTarget = { kind: 'host', asset: { type: 'web_application', name: 'w' }, host: 'app.example.com', port: 8443, url: 'https://app.example.com:8443/' };
const server: HostTarget = { kind: 'host', asset: { type: 'server', name: 's' }, host: '192.0.2.9', port: null, url: null };

describe('tools file', () => {
  it('a list of {name, command, output, timeout?}', () => {
    const tools = parse(`
- name: semgrep
  command: [semgrep, scan, --config, auto, --sarif, --quiet, "{target}"]
  output: sarif
  timeout: 30m
- name: banner
  command: ["/usr/bin/ncat", "{host}", "{port}"]
  output: text
`);
    assert.deepEqual(tools.map((t) => [t.name, t.declared.output, t.timeoutSeconds, t.scans]), [['semgrep', 'sarif', 1800, 'any'], ['banner', 'text', null, 'any']]);
    assert.deepEqual(parse('tools:\n  - {name: x, command: [x], output: report, timeout: 90}\n').map((t) => t.timeoutSeconds), [90]);
    assert.deepEqual(parse(''), []);
  });

  it('every problem names the file, the entry and the field', () => {
    const yaml = `
- name: Bad Name
  command: [x]
  output: sarif
- name: ok
  command: []
  output: xml
- name: extra
  command: [x, "{secret}"]
  output: text
  shell: true
- name: slow
  command: [x]
  output: text
  timeout: forever
`;
    assert.throws(() => parse(yaml), (err: Error) => {
      assert.ok(err.message.startsWith(`${FILE}: `));
      for (const expected of [
        'tools[0] (Bad Name).name: must be lower-case',
        'tools[1] (ok).command: must name the program',
        'tools[1] (ok).output: must be sarif, report or text',
        'tools[2] (extra).shell: is not a field',
        'tools[3] (slow).timeout: must be a duration',
      ]) assert.ok(err.message.includes(expected), `${expected}\n in: ${err.message}`);
      return true;
    });
  });

  it('refuses a built-in name, a name twice, a placeholder as the program, and what is not a list', () => {
    assert.throws(() => parse('- {name: nmap, command: [nmap], output: text}'), /tools\[0\] \(nmap\)\.name: nmap is a built-in tool/);
    assert.throws(() => parse('- {name: a, command: [a], output: text}\n- {name: a, command: [b], output: text}'), /tools\[1\] \(a\)\.name: a is declared twice/);
    assert.throws(() => parse('- {name: a, command: ["{target}"], output: text}'), /first element must be the program/);
    assert.throws(() => parse('name: a'), (e: Error) => e.message.startsWith(`${FILE}: must be a list of tools`));
    assert.throws(() => parse('- [unclosed'), (e: Error) => e.message.startsWith(`${FILE}: not YAML`));
  });

  it('a file that cannot be read says so, with its path', async () => {
    await assert.rejects(loadToolsFile('/nonexistent/tools.yaml', []), /\/nonexistent\/tools\.yaml: cannot read the tools file \(ENOENT\)/);
  });

  it('placeholders inside argv elements, never split or given to a shell', () => {
    assert.deepEqual(placeholderValues(repo, '/w'), { target: '/w/checkout', host: null, port: null, workdir: '/w' });
    assert.deepEqual(placeholderValues(web, '/w'), { target: 'https://app.example.com:8443/', host: 'app.example.com', port: '8443', workdir: '/w' });
    assert.deepEqual(placeholderValues(server, '/w'), { target: '192.0.2.9', host: '192.0.2.9', port: null, workdir: '/w' });
    const values = { target: 'a b; $(x)', host: 'h', port: '1', workdir: '/w' };
    assert.deepEqual(substitute(['t', '--url={target}', '{host}:{port}', '--out={workdir}/r.sarif', '{"a": "${b}"} {targets}'], values, 't'),
      ['t', '--url=a b; $(x)', 'h:1', '--out=/w/r.sarif', '{"a": "${b}"} {targets}']);
    assert.throws(() => substitute(['t', '{port}'], placeholderValues(server, '/w'), 't'), (e: ToolError) => e.code === 'target_unsupported' && /no \{port\}/.test(e.message));
  });

  it('a declared tool whose program is missing: detect() says missing, its commands fail tool_missing naming it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'scanflow-toolsfile-'));
    const file = path.join(dir, 'tools.yaml');
    writeFileSync(file, `
- name: gitleaks
  command: [scanflow-no-such-gitleaks, detect, --report-format, sarif, --source, "{target}"]
  output: sarif
- name: echo-report
  command: [sh, -c, 'echo "{\\"findings\\": []}"']
  output: report
`);
    const box = await loadToolbox({ toolsFile: file });
    assert.deepEqual([...box.keys()], [...BUILTIN_TOOL_NAMES, 'gitleaks', 'echo-report']);
    const detections = await detectTools(box);
    const gitleaks = detections.find((d) => d.tool === 'gitleaks')!;
    assert.equal(gitleaks.available, false);
    assert.ok(!gitleaks.available && /scanflow-no-such-gitleaks is not on PATH/.test(gitleaks.reason));
    assert.ok(availableTools(detections).includes('echo-report'));
    assert.ok(!availableTools(detections).includes('gitleaks'));
    assert.throws(() => box.get('gitleaks')!.command({}, repo, '/w'), (e: ToolError) => e.code === 'tool_missing' && e.message.includes('gitleaks'));
    assert.throws(() => box.get('echo-report')!.checkConfig({ flags: '-x' }), (e: ToolError) => e.code === 'invalid_config');
  });

  it('outputs: SARIF or a report on stdout whatever the exit code; text only on exit 0', () => {
    const [sarifTool, reportTool, textTool] = parse(`
- {name: s, command: [s], output: sarif}
- {name: r, command: [r], output: report}
- {name: t, command: [t], output: text}
`);
    const ctx = { target: server, now: new Date(), readSource: () => null };
    const log = JSON.stringify({ version: '2.1.0', runs: [{ tool: { driver: { name: 's' } }, results: [{ message: { text: 'x' } }] }] });
    assert.deepEqual(sarifTool.parse(log, '', 1, ctx).output, { exit_code: 1, results: 1 });
    assert.throws(() => sarifTool.parse('', 'boom', 2, ctx), (e: ToolError) => e.code === 'tool_failed' && /boom/.test(e.message));
    assert.throws(() => sarifTool.parse('{"version":"2.0.0","runs":[]}', '', 0, ctx), (e: ToolError) => e.code === 'output_invalid');
    assert.deepEqual(reportTool.parse('{"version":"1.0","findings":[{},{}]}', '', 0, ctx).output, { exit_code: 0, findings: 2 });
    assert.throws(() => reportTool.parse('[1]', '', 0, ctx), (e: ToolError) => e.code === 'output_invalid');
    assert.deepEqual(textTool.parse('hello', '', 0, ctx), { format: 'text', document: null, output: { exit_code: 0 } });
    assert.throws(() => textTool.parse('', 'bad', 3, ctx), (e: ToolError) => e.code === 'tool_failed' && e.exitCode === 3);
  });
});
