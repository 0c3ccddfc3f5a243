// Headless Chromium for the dashboard's browser tests: Debian's package (`apt-get install -y
// chromium`, version 156), driven by playwright-core 1.64 (its release for Chromium 156).
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// The machine's closed network refuses Chromium's own background connections (updates,
// sync, QUIC probes); without these flags it keeps retrying them.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** node:test's `skip` for a browser test: false when Chromium is there, else why and what to install. */
export const chromiumSkip: string | false = existsSync(CHROMIUM) ? false : `needs Chromium at ${CHROMIUM}: apt-get install -y chromium`;
