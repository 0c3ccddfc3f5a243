#!/usr/bin/env node
// scanflow-agent: the reference agent (src/agent/main.ts; `npm run agent` runs the same).
// It is TypeScript that Node 24 runs as is. When the `node` on PATH that started this file is
// older, it hands over to the project's own Node 24 (the `node` devDependency that
// `npm install` puts in node_modules/.bin, which `npm start` and `npm run agent` use too),
// or says what to install. Kept plain JavaScript that any Node from 14 on can read.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const MIN_MAJOR = 24;
const main = fileURLToPath(new URL('../src/agent/main.ts', import.meta.url));
const major = Number(process.versions.node.split('.')[0]);

if (major >= MIN_MAJOR) {
  await import(new URL('../src/agent/main.ts', import.meta.url).href);
} else {
  const local = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  if (!existsSync(local)) {
    process.stderr.write(
      `scanflow-agent needs Node.js ${MIN_MAJOR} or later (this is ${process.version}): run \`npm install\` in ` +
        `${fileURLToPath(new URL('..', import.meta.url))} (it installs Node ${MIN_MAJOR} for the project), or install Node ${MIN_MAJOR}.\n`,
    );
    process.exit(2);
  }
  const child = spawn(local, [main, ...process.argv.slice(2)], { stdio: 'inherit' });
  // The agent handles SIGTERM/SIGINT itself (grace period); this process only passes them on.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
