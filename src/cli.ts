// Command line: `npm run apply -- <file>` applies a config file (pipelines and scans) and
// reports what it created, updated and removed; `npm run check-config -- <file>` only
// validates it. The database is DATABASE_URL's, or the embedded one of `npm start` (running
// or not).
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { ConfigError, loadConfig } from './config.ts';
import { createPool } from './db/pool.ts';
import { migrate } from './db/migrate.ts';
import { startEmbeddedPostgres } from './db/embedded.ts';
import { readConfigFile, formatProblem } from './config-file/parse.ts';
import { applyConfigFile, ConfigFileError, formatReport } from './config-file/index.ts';

const USAGE = `usage:
  npm run apply -- <config file>          apply pipelines and scans declared in the file
  npm run check-config -- <config file>   validate the file, change nothing
(the file defaults to CONFIG_FILE)`;

/** The database: DATABASE_URL, else the embedded PostgreSQL of DATA_DIR, started if needed. */
async function database(config: ReturnType<typeof loadConfig>): Promise<{ url: string; stop: () => Promise<void> }> {
  if (config.databaseUrl) return { url: config.databaseUrl, stop: async () => {} };
  const passwordFile = path.join(path.resolve(config.dataDir), 'postgres.password');
  if (existsSync(passwordFile)) {
    const password = readFileSync(passwordFile, 'utf8').trim();
    const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${config.embeddedPgPort}/scanflow`;
    const probe = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
    try {
      await probe.connect(); // `npm start` is running: use its database
      await probe.end();
      return { url, stop: async () => {} };
    } catch {
      await probe.end().catch(() => {});
    }
  }
  const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.embeddedPgPort, database: 'scanflow' });
  return { url: embedded.url, stop: embedded.stop };
}

async function main(argv: string[]): Promise<number> {
  const [command, fileArg] = argv;
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  const file = fileArg ?? config.configFile;
  if ((command !== 'apply' && command !== 'check') || !file) {
    console.error(USAGE);
    return 2;
  }
  if (command === 'check') {
    const parsed = await readConfigFile(file);
    if (!parsed.ok) {
      console.error(`${file} is invalid:\n${parsed.problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`);
      return 1;
    }
    const t = parsed.value.tenants;
    console.log(`${file} is valid: ${t.length} tenant(s), ${t.reduce((n, x) => n + x.pipelines.length, 0)} pipeline(s), ${t.reduce((n, x) => n + x.scans.length, 0)} scan(s)`);
    return 0;
  }
  const db = await database(config);
  const pool = createPool(db.url, 2);
  try {
    await migrate(db.url);
    const report = await applyConfigFile(pool, file);
    console.log(`applied ${file}:\n${formatReport(report)}`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigFileError) {
      console.error(err.message);
      return 1;
    }
    throw err;
  } finally {
    await pool.end();
    await db.stop();
  }
}

process.exitCode = await main(process.argv.slice(2));
