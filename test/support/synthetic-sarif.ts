// A large SARIF 2.1.0 log made up deterministically (the same seed gives the same bytes), for
// the findings benchmark: shaped like a SAST tool's output on a big monorepo (Semgrep's and
// CodeQL's logs were the model). A few hundred rules with descriptions, help links, CWE tags
// and, for most, a security-severity; results spread over thousands of files of eight
// languages, a few rules far more frequent than the rest; each result with a message, a
// region with its snippet, and for some a primaryLocationLineHash (CodeQL's), a tool
// fingerprint (Semgrep's matchBasedId) or a security-severity of its own. Every result is a
// finding of its own identity: a report of N results creates N findings.
import { createHash } from 'node:crypto';
import type * as sarif from 'sarif';

/** mulberry32: small, fast, and the same sequence everywhere for a seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LANGUAGES = [
  { id: 'javascript', ext: 'js', dirs: ['src', 'lib', 'web/app', 'packages/ui/src'] },
  { id: 'typescript', ext: 'ts', dirs: ['src', 'server', 'packages/api/src', 'apps/admin/src'] },
  { id: 'python', ext: 'py', dirs: ['app', 'services', 'scripts', 'ml/pipeline'] },
  { id: 'java', ext: 'java', dirs: ['src/main/java/com/acme/shop', 'src/main/java/com/acme/billing', 'legacy/src'] },
  { id: 'go', ext: 'go', dirs: ['internal', 'pkg', 'cmd/gateway'] },
  { id: 'ruby', ext: 'rb', dirs: ['app/controllers', 'app/models', 'lib/tasks'] },
  { id: 'php', ext: 'php', dirs: ['public', 'src/Controller', 'vendor-patches'] },
  { id: 'csharp', ext: 'cs', dirs: ['Acme.Web/Controllers', 'Acme.Core/Services'] },
] as const;

const WEAKNESSES = [
  { key: 'sql-injection', cwe: 89, level: 'error', score: 8.8, title: 'SQL query built from user input', sink: 'db.query' },
  { key: 'xss', cwe: 79, level: 'warning', score: 6.1, title: 'Cross-site scripting: user input written to the response', sink: 'res.send' },
  { key: 'path-traversal', cwe: 22, level: 'error', score: 7.5, title: 'File path built from user input', sink: 'fs.readFile' },
  { key: 'command-injection', cwe: 78, level: 'error', score: 9.8, title: 'OS command built from user input', sink: 'exec' },
  { key: 'ssrf', cwe: 918, level: 'error', score: 8.6, title: 'Server-side request to a URL from user input', sink: 'http.get' },
  { key: 'hardcoded-secret', cwe: 798, level: 'error', score: 7.2, title: 'Hard-coded credential', sink: 'config', secret: true },
  { key: 'weak-crypto', cwe: 327, level: 'warning', score: 5.9, title: 'Broken or risky cryptographic algorithm', sink: 'createHash' },
  { key: 'insecure-deserialization', cwe: 502, level: 'error', score: 9.1, title: 'Deserialization of untrusted data', sink: 'deserialize' },
  { key: 'open-redirect', cwe: 601, level: 'warning', score: 6.1, title: 'Redirect to a URL from user input', sink: 'redirect' },
  { key: 'xxe', cwe: 611, level: 'error', score: 8.2, title: 'XML parser resolves external entities', sink: 'parseXml' },
  { key: 'prototype-pollution', cwe: 1321, level: 'warning', score: 6.5, title: 'Prototype pollution through a recursive merge', sink: 'merge' },
  { key: 'regex-dos', cwe: 1333, level: 'note', score: 5.3, title: 'Regular expression with exponential backtracking', sink: 'RegExp' },
  { key: 'insecure-random', cwe: 330, level: 'note', score: 3.7, title: 'Insecure randomness used for a security token', sink: 'Math.random' },
  { key: 'missing-csrf', cwe: 352, level: 'warning', score: 6.5, title: 'State-changing route without CSRF protection', sink: 'route' },
  { key: 'log-injection', cwe: 117, level: 'note', score: 4.3, title: 'User input written to the log unneutralized', sink: 'logger.info' },
] as const;

const VARIANTS = ['taint', 'audit', 'config'] as const;
const SOURCES = ['req.query', 'req.body', 'request.args', 'params', 'headers', 'cookies', 'form', 'event.payload'];
const WORDS = ['user', 'order', 'invoice', 'account', 'report', 'session', 'token', 'item', 'cart', 'profile', 'tenant', 'export'];

const hex = (text: string, length: number) => createHash('sha1').update(text).digest('hex').slice(0, length);

/**
 * A SARIF log of `results` results from one run of a SAST tool ("Semgrep OSS"), with `rules`
 * rules over `files` files. Deterministic: the same arguments give the same log.
 */
export function syntheticSarif(opts: { results: number; rules?: number; files?: number; seed?: number }): sarif.Log {
  const rnd = random(opts.seed ?? 20261122);
  const pick = <T>(list: readonly T[]) => list[Math.floor(rnd() * list.length)];
  const ruleCount = opts.rules ?? 300;
  const fileCount = opts.files ?? 4_000;

  const rules: (sarif.ReportingDescriptor & { language: (typeof LANGUAGES)[number]; weakness: (typeof WEAKNESSES)[number] })[] = [];
  for (let r = 0; r < ruleCount; r++) {
    const weakness = WEAKNESSES[r % WEAKNESSES.length];
    const language = LANGUAGES[Math.floor(r / WEAKNESSES.length) % LANGUAGES.length];
    const variant = VARIANTS[Math.floor(r / (WEAKNESSES.length * LANGUAGES.length)) % VARIANTS.length];
    const id = `${language.id}.lang.security.${variant}.${weakness.key}${r >= WEAKNESSES.length * LANGUAGES.length * VARIANTS.length ? `-${r}` : ''}`;
    const tags = ['security', `external/cwe/cwe-${weakness.cwe}`, `OWASP-${pick(['A01', 'A03', 'A05', 'A07', 'A08', 'A10'])}:2021`];
    if ('secret' in weakness) tags.push('secret');
    const properties: sarif.PropertyBag = { tags, precision: pick(['very-high', 'high', 'medium']) };
    // Most rules carry a CVSS-like score (GitHub code scanning reads it); the rest fall back to their level.
    if (r % 5 !== 0) properties['security-severity'] = (weakness.score + (rnd() - 0.5)).toFixed(1);
    rules.push({
      id,
      name: id.split('.').slice(-2).join('.'),
      shortDescription: { text: `${weakness.title} (${language.id}, ${variant})` },
      fullDescription: {
        text: `${weakness.title}. Data that reaches ${weakness.sink} from outside the application must be validated or ` +
          `escaped for that context first. This ${variant} rule follows ${language.id} code paths.`,
      },
      helpUri: `https://semgrep.dev/r/${id}`,
      defaultConfiguration: { level: weakness.level },
      properties,
      language,
      weakness,
    });
  }

  const filesOf = new Map<string, string[]>();
  for (const language of LANGUAGES) {
    const files: string[] = [];
    for (let f = 0; f < fileCount / LANGUAGES.length; f++) {
      files.push(`${pick(language.dirs)}/${pick(WORDS)}/${pick(WORDS)}_${pick(['handler', 'service', 'view', 'util', 'repo', 'model'])}${f}.${language.ext}`);
    }
    filesOf.set(language.id, files);
  }

  const results: sarif.Result[] = [];
  for (let i = 0; i < opts.results; i++) {
    // A few rules account for most results (as in real scans): a skewed pick.
    const rule = rules[Math.floor(rules.length * rnd() ** 2.5)];
    const ruleIndex = rules.indexOf(rule);
    const path = pick(filesOf.get(rule.language.id)!);
    const line = 1 + Math.floor(rnd() * 1200);
    const column = 1 + Math.floor(rnd() * 40);
    const variable = `${pick(WORDS)}${pick(['Id', 'Name', 'Path', 'Url', 'Data', 'Query'])}${i}`;
    const source = pick(SOURCES);
    const snippet = `    const ${variable} = ${rule.weakness.sink}(${source}.${pick(WORDS)}, { ${pick(WORDS)}: ${i % 97} });`;
    const result: sarif.Result = {
      ruleId: rule.id,
      ruleIndex,
      message: {
        text: `${rule.weakness.title}: '${variable}' comes from ${source} and reaches ${rule.weakness.sink} without validation.`,
      },
      locations: [{
        physicalLocation: {
          artifactLocation: { uri: path, uriBaseId: '%SRCROOT%' },
          region: { startLine: line, startColumn: column, endLine: line, endColumn: column + snippet.trim().length, snippet: { text: snippet } },
        },
      }],
    };
    if (i % 3 === 0) result.level = rule.weakness.level;
    if (i % 5 < 2) result.partialFingerprints = { primaryLocationLineHash: `${hex(`line ${i}`, 16)}:1` };
    if (i % 10 === 7) result.fingerprints = { 'matchBasedId/v1': hex(`match ${i}`, 40) };
    if (i % 20 === 3) result.properties = { 'security-severity': (rnd() * 10).toFixed(1), exposure: pick(['internet', 'internal']) };
    results.push(result);
  }

  return {
    $schema: 'https://json.schemastore.org/sarif-2.1.0.json',
    version: '2.1.0',
    runs: [{
      tool: {
        driver: {
          name: 'Semgrep OSS',
          semanticVersion: '1.98.0',
          informationUri: 'https://semgrep.dev',
          rules: rules.map(({ language: _l, weakness: _w, ...rule }) => rule),
        },
      },
      originalUriBaseIds: { '%SRCROOT%': { uri: 'file:///src/' } },
      invocations: [{ executionSuccessful: true, workingDirectory: { uri: 'file:///src/' } }],
      columnKind: 'utf16CodeUnits',
      results,
    }],
  };
}
