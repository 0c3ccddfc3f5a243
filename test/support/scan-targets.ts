// Local targets for the real tools (test/agent-tools-real.test.ts, test/agent-scan.test.ts),
// never an outside host: a git repository made here with a planted AWS key, an eval of user
// input and a lockfile with a vulnerable minimist; a TCP service with a banner and a TLS
// server with a weak, self-signed 1024-bit certificate on 127.0.0.1 (the TLS server only
// where openssl is installed); and a stub npm registry on 127.0.0.1 that npm audit asks about
// that lockfile.
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { findExecutable } from '../../src/agent/tools/binaries.ts';

/** The environment git commits with in the test repositories. */
export const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.test', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.test' };

const UPPER_BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const BASE64 = `${ALPHANUMERIC}/+`;

/**
 * A random AWS key pair of the shape secretlint's preset looks for (never a real one).
 * The secret's last character is alphanumeric: secretlint's AWSSecretAccessKey pattern ends
 * with a word boundary, so a secret ending in "/" or "+" (1 in 32 of random ones) followed by
 * a quote is not reported, and a test planting it would fail by chance.
 */
export function plantedAwsKeys(): { id: string; secret: string } {
  let id = 'AKIA';
  for (let i = 0; i < 16; i++) id += UPPER_BASE32[randomInt(UPPER_BASE32.length)];
  let secret = '';
  for (let i = 0; i < 39; i++) secret += BASE64[randomInt(BASE64.length)];
  secret += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return { id, secret };
}

/** The advisory the stub registry gives for minimist (the lockfile has 0.0.8). */
export const ADVISORY = {
  id: 2, url: 'https://github.com/advisories/GHSA-xvch-5gv4-984h', title: 'Prototype Pollution in minimist', severity: 'critical',
  vulnerable_versions: '<0.2.4', cwe: ['CWE-1321'], cvss: { score: 9.8, vectorString: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H' },
};
const packument = (name: string, versions: [string, Record<string, string>?][], latest: string) => ({
  name, 'dist-tags': { latest },
  versions: Object.fromEntries(versions.map(([v, dependencies = {}]) => [v, { name, version: v, dependencies, dist: { tarball: `http://127.0.0.1/${name}-${v}.tgz` } }])),
});
const PACKUMENTS: Record<string, unknown> = {
  minimist: packument('minimist', [['0.0.8'], ['0.2.0'], ['0.2.4'], ['1.2.6']], '1.2.6'),
  mkdirp: packument('mkdirp', [['0.5.1', { minimist: '0.0.8' }], ['0.5.6', { minimist: '^1.2.6' }]], '0.5.6'),
};

const fixture = (name: string) => new URL(`../fixtures/agent/${name}`, import.meta.url);

export type ScanTargets = {
  /** A temporary directory holding everything here; removed by close(). */
  root: string;
  /** The git repository (branch main, one commit). */
  repo: string;
  /** A TCP service that sends an SSH banner. */
  tcpPort: number;
  /** The TLS server (TLSv1 and up, 1024-bit self-signed certificate); 0 without openssl. */
  tlsPort: number;
  /** The stub registry's address, for npm_config_registry. */
  registryUrl: string;
  close(): Promise<void>;
};

/**
 * Makes the targets. The repository holds config.js (the planted key, line 4), app.js (eval
 * of a query parameter), package.json and package-lock.json (minimist 0.0.8 through mkdirp);
 * with moreSources also handler.ts (eval in TypeScript) and copy.c (strcpy into a fixed buffer).
 */
export async function startScanTargets(prefix: string, { moreSources = false }: { moreSources?: boolean } = {}): Promise<ScanTargets> {
  const root = mkdtempSync(path.join(tmpdir(), prefix));
  const servers: (Server | HttpServer)[] = [];
  // Every connection, destroyed by close(): a probe may leave one half open.
  const sockets = new Set<Socket>();
  const listen = async (server: Server | HttpServer): Promise<number> => {
    servers.push(server);
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as { port: number }).port;
  };
  const close = async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => {
      s.close(resolve);
      for (const socket of sockets) socket.destroy();
    })));
    rmSync(root, { recursive: true, force: true });
  };

  try {
    const repo = path.join(root, 'origin');
    mkdirSync(repo);
    const keys = plantedAwsKeys();
    writeFileSync(path.join(repo, 'config.js'), `// deployment settings\nexport const aws = {\n  accessKeyId: "${keys.id}",\n  secretAccessKey: "${keys.secret}",\n};\n`);
    writeFileSync(path.join(repo, 'app.js'), [
      "const http = require('http');",
      'http.createServer((req, res) => {',
      "  const q = new URL(req.url, 'http://x').searchParams.get('expr');",
      '  res.end(String(eval(q)));',
      '}).listen(3000);',
      '',
    ].join('\n'));
    if (moreSources) {
      writeFileSync(path.join(repo, 'handler.ts'), 'type Q = { expr: string };\nexport function run(q: Q): unknown {\n  return eval(q.expr);\n}\n');
      writeFileSync(path.join(repo, 'copy.c'), '#include <string.h>\nvoid copy(char *in) {\n  char buf[16];\n  strcpy(buf, in);\n}\n');
    }
    copyFileSync(fixture('npm-audit.package.json'), path.join(repo, 'package.json'));
    copyFileSync(fixture('npm-audit.package-lock.json'), path.join(repo, 'package-lock.json'));
    execFileSync('git', ['init', '--quiet', '--initial-branch', 'main', repo], { env: GIT_ENV });
    execFileSync('git', ['add', '.'], { cwd: repo, env: GIT_ENV });
    execFileSync('git', ['commit', '--quiet', '-m', 'app'], { cwd: repo, env: GIT_ENV });

    const tcp = createTcpServer((s) => {
      s.on('error', () => {});
      s.end('SSH-2.0-OpenSSH_8.9\r\n');
    });
    const tcpPort = await listen(tcp);

    let tlsPort = 0;
    if (findExecutable('openssl')) {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:1024', '-nodes', '-days', '2', '-subj', '/CN=scanflow-test',
        '-keyout', path.join(root, 'key.pem'), '-out', path.join(root, 'cert.pem')], { stdio: 'ignore' });
      const certificate = { key: readFileSync(path.join(root, 'key.pem'), 'utf8'), cert: readFileSync(path.join(root, 'cert.pem'), 'utf8') };
      const tls = createTlsServer({ ...certificate, minVersion: 'TLSv1', ciphers: 'DEFAULT:@SECLEVEL=0' }, (s) => {
        s.on('error', () => {});
        s.end('HTTP/1.0 200 OK\r\n\r\nok');
      });
      tls.on('tlsClientError', () => {});
      tlsPort = await listen(tls);
    }

    const registry = createHttpServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      res.setHeader('content-type', 'application/json');
      if (req.method === 'POST' && req.url?.endsWith('/-/npm/v1/security/advisories/bulk')) {
        const body = Buffer.concat(chunks);
        const asked = JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString()) as Record<string, string[]>;
        res.end(JSON.stringify(asked.minimist ? { minimist: [ADVISORY] } : {}));
        return;
      }
      const found = PACKUMENTS[decodeURIComponent((req.url ?? '/').slice(1))];
      res.statusCode = found ? 200 : 404;
      res.end(JSON.stringify(found ?? {}));
    });
    const registryUrl = `http://127.0.0.1:${await listen(registry)}/`;
    return { root, repo, tcpPort, tlsPort, registryUrl, close };
  } catch (err) {
    await close();
    throw err;
  }
}
