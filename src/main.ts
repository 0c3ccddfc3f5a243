// Entry point: `npm start`. Runs the API and the worker in one process (ROLE=api|worker
// to split them), on DATABASE_URL or an embedded PostgreSQL.
import { ConfigError, loadConfig } from './config.ts';
import { startOrchestrator } from './server.ts';
import { ConfigFileError } from './config-file/index.ts';
import { processLogger } from './observability/logger.ts';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(2);
  }
  throw err;
}

const logger = await processLogger(config.logLevel);
const orchestrator = await startOrchestrator(config, logger).catch((err) => {
  if (err instanceof ConfigFileError) {
    console.error(err.message); // every problem with its file, line and path; no stack
    process.exit(1);
  }
  logger.fatal({ err }, 'could not start');
  process.exit(1);
});

if (orchestrator.url) {
  logger.info({ url: orchestrator.url, dashboard: `${orchestrator.url}/`, role: config.role }, 'scanflow is listening');
  // The address to open, on every start: the dashboard signs in with a tenant token or the admin token.
  process.stdout.write(`\n  dashboard:     ${orchestrator.url}/\n${orchestrator.generatedAdminToken ? '' : '\n'}`);
}
if (orchestrator.generatedAdminToken) {
  // Printed once, on the start that generated it; only its hash is stored.
  process.stdout.write(
    `${orchestrator.url ? '' : '\n'}  scanflow API:  ${orchestrator.url || '(worker only)'}\n` +
      `  admin token:   ${orchestrator.generatedAdminToken}\n` +
      `  (shown once; set ADMIN_TOKEN to choose your own)\n\n`,
  );
}

let stopping = false;
const shutdown = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down');
  const force = setTimeout(() => {
    logger.error('shutdown took longer than 30s; exiting');
    process.exit(1);
  }, 30_000);
  force.unref();
  orchestrator.stop().then(
    () => {
      logger.info('stopped');
      process.exit(0);
    },
    (err) => {
      logger.error({ err }, 'error during shutdown');
      process.exit(1);
    },
  );
};
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
