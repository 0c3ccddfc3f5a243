// Whose work this is, for the log lines it writes: the logger of the request or job being
// served (a pino child carrying its request_id, or the job's task and id), found through
// AsyncLocalStorage so the code deep in progression logs with it without being handed it.
import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { type Logger } from 'pino';

type Scope = { log: Logger; requestId: string | null };

const scope = new AsyncLocalStorage<Scope>();

// Outside any request or job (nothing of ours transitions there) lines go nowhere rather
// than to a logger nobody configured.
const nowhere = pino({ level: 'silent' });

/** Runs fn with `log` as the logger of everything it does (a request, a job). */
export function withLog<T>(log: Logger, fn: () => T, requestId: string | null = null): T {
  return scope.run({ log, requestId }, fn);
}

/** The logger of the request or job being served; outside one, `fallback`. */
export function currentLog(fallback: Logger = nowhere): Logger {
  return scope.getStore()?.log ?? fallback;
}

/** The id of the request being served (x-request-id), or null in a job. */
export function currentRequestId(): string | null {
  return scope.getStore()?.requestId ?? null;
}
