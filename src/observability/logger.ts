// The process's logger: JSON lines for whatever collects them; on a terminal, the same
// lines made readable by pino-pretty (loaded only then).
import pino, { type DestinationStream, type Logger } from 'pino';

type Output = DestinationStream & { isTTY?: boolean };

export async function processLogger(level: string, out: Output = process.stdout): Promise<Logger> {
  if (!out.isTTY) return out === process.stdout ? pino({ level }) : pino({ level }, out);
  const { prettyFactory } = await import('pino-pretty');
  const format = prettyFactory({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  // Formatted in the call that logs, with no stream between: a line logged just before
  // process.exit() is not lost.
  return pino({ level }, { write: (line: string) => out.write(format(line)) });
}
