// `npm test`: the node:test suite on a real PostgreSQL. With DATABASE_URL, that server;
// otherwise an embedded PostgreSQL in a temporary directory. One template database is
// migrated once; each test file clones its own database from it (test/support/db.ts).
import { spawn } from 'node:child_process';
import { mkdtemp, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { freePort } from './support/ports.ts';

const root = fileURLToPath(new URL('..', import.meta.url));


async function testFiles(args: string[]): Promise<string[]> {
  const files = args.filter((a) => a.endsWith('.ts'));
  if (files.length) return files;
  return (await readdir(path.join(root, 'test')))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => path.join('test', f));
}

const args = process.argv.slice(2);
let serverUrl = process.env.DATABASE_URL;
let stopEmbedded: (() => Promise<void>) | null = null;
let tmp: string | null = null;
if (!serverUrl) {
  tmp = await mkdtemp(path.join(tmpdir(), 'scanflow-test-'));
  const db = await startEmbeddedPostgres({ dataDir: tmp, port: await freePort(), database: 'scanflow_test', persistent: false });
  serverUrl = db.url;
  stopEmbedded = db.stop;
}

const template = `scanflow_tpl_${process.pid}`;
const admin = new pg.Client({ connectionString: serverUrl });
await admin.connect();
await admin.query(`DROP DATABASE IF EXISTS ${template}`);
await admin.query(`CREATE DATABASE ${template}`);
const templateUrl = new URL(serverUrl);
templateUrl.pathname = `/${template}`;
await migrate(templateUrl.toString());

const files = await testFiles(args);
const concurrency = Number(process.env.TEST_CONCURRENCY ?? 3);
const code = await new Promise<number>((resolve) => {
  const child = spawn(
    process.execPath,
    ['--test', `--test-concurrency=${concurrency}`, ...args.filter((a) => !a.endsWith('.ts')), ...files],
    {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, TEST_SERVER_URL: serverUrl, TEST_TEMPLATE_DB: template },
    },
  );
  child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
});

// Drop the template and any database a crashed test file left behind.
const leftovers = await admin.query<{ datname: string }>(
  `SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2`,
  [template, `scanflow_t_${process.pid}_%`],
);
for (const { datname } of leftovers.rows) await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`).catch(() => {});
await admin.end();
if (stopEmbedded) await stopEmbedded();
if (tmp) await rm(tmp, { recursive: true, force: true });
process.exit(code);
