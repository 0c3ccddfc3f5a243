// Entry point of the reference agent: `npm run agent` (or the scanflow-agent bin). Reads its
// configuration (exit 2 when it is wrong), says which tools this host has, connects (exit 1
// when the key is refused or the server stays unreachable), then runs until SIGTERM/SIGINT.
import os from 'node:os';
import pino from 'pino';
import pkg from '../../package.json' with { type: 'json' };
import { Agent, StartError } from './agent.ts';
import { AgentConfigError, loadAgentConfig, readArgs, USAGE } from './config.ts';
import { compareTools, comparisonReport, hostReport } from './host-report.ts';
import { detectTools, loadToolbox } from './toolbox.ts';

const say = (lines: string[]) => process.stdout.write(`${lines.join('\n')}\n`);

let invocation;
try {
  invocation = readArgs(process.argv.slice(2), process.env);
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}
if (invocation.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

let config = null;
if (!invocation.detect) {
  try {
    config = loadAgentConfig(invocation.env);
  } catch (err) {
    if (!(err instanceof AgentConfigError)) throw err;
    process.stderr.write(`${err.message}\n(scanflow-agent --help lists the settings)\n`);
    process.exit(2);
  }
}

let toolbox;
try {
  toolbox = await loadToolbox({ toolsFile: invocation.env.SCANFLOW_TOOLS_FILE || null });
} catch (err) {
  process.stderr.write(`scanflow-agent: SCANFLOW_TOOLS_FILE (--tools-file): ${(err as Error).message}\n`);
  process.exit(2);
}
const detections = await detectTools(toolbox);
const banner = [`scanflow-agent ${pkg.version} on ${os.hostname()} (Node ${process.version})`, 'tools on this host:', ...hostReport(detections)];
if (!config) {
  say(banner);
  process.exit(0);
}

const logger = pino({ level: config.logLevel, base: { agent: 'scanflow-agent' } });
const agent = new Agent({ config, toolbox, detections, logger, version: pkg.version });
say(banner);

let answer;
try {
  answer = await agent.connect();
} catch (err) {
  if (!(err instanceof StartError)) throw err;
  process.stderr.write(`scanflow-agent: cannot start: ${err.message}\n`);
  process.exit(1);
}

const lines = [`connected to ${config.url} as agent ${answer.agent_id}`];
lines.push(`  concurrency: ${agent.concurrency} (${config.concurrency !== null ? 'SCANFLOW_AGENT_CONCURRENCY' : answer.max_concurrent_jobs !== undefined ? 'the agent\'s max_concurrent_jobs' : 'default'})`);
if (answer.tools) lines.push(...comparisonReport(compareTools(detections, answer.tools), answer.agent_id));
lines.push(`  work directory: ${agent.workDirectory}`, `  heartbeat every ${answer.heartbeat_interval_seconds}s; polling for commands`);
say(lines);

process.on('SIGTERM', () => agent.shutdown('SIGTERM'));
process.on('SIGINT', () => agent.shutdown('SIGINT'));
await agent.run();
process.exit(agent.fatal ? 1 : 0);
