// Step output (API.md Part 2 "Step output (logs)"): agents append a command's tool output at
// byte offsets (Content-Range or ?offset, or at the end), a mismatch is a 416 with the length
// to resume from, a repeat is a no-op; LOG_MAX_BYTES truncates with a marker; reads answer
// text or JSON, per attempt, tailing by offset, never cutting a character; retention deletes
// old output. The pure decisions (ranges, the cap's cut, read windows, Accept) are tested
// first, without a database.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { startHarness, type Harness, type Response } from './support/harness.ts';
import {
  TestAgent, createPipeline, createTenant, passRetryDelays, startRun, step, type Tenant,
} from './support/fixtures.ts';
import {
  charBoundaryAtOrBefore, parseContentRange, planAppend, prefersText, readWindow, truncationMarker,
} from '../src/domain/output.ts';
import { retentionPass, withPoolClient } from '../src/progression/retention.ts';
import { MAX_BODY_BYTES } from '../src/api/app.ts';

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);

// ---------------------------------------------------------------- pure decisions

describe('parseContentRange', () => {
  it('reads bytes S-E, with or without a total', () => {
    assert.deepEqual(parseContentRange('bytes 0-9', 10), { start: 0, end: 9, total: null });
    assert.deepEqual(parseContentRange('bytes 10-19/100', 10), { start: 10, end: 19, total: 100 });
    assert.deepEqual(parseContentRange('bytes 10-19/*', 10), { start: 10, end: 19, total: null });
  });
  it('refuses ranges that do not describe the body', () => {
    for (const [header, n] of [['bytes 0-9', 9], ['bytes 5-4', 0], ['0-9', 10], ['bytes 0-9/5', 10], ['bytes */10', 0], ['bytes -1-9', 11], ['items 0-9', 10]] as const) {
      const r = parseContentRange(header, n);
      assert.ok('path' in r && r.path === 'Content-Range', `${header} (${n} bytes) → ${JSON.stringify(r)}`);
    }
  });
});

describe('planAppend', () => {
  it('keeps all below the cap, a prefix with the marker across it, nothing past it', () => {
    const body = bytes('0123456789');
    assert.deepEqual(planAppend(0, body, 10), { keep: body, marker: null });
    const across = planAppend(5, body, 10);
    assert.equal(Buffer.from(across.keep).toString(), '01234');
    assert.deepEqual(across.marker, truncationMarker(10));
    const past = planAppend(10, body, 10);
    assert.equal(past.keep.byteLength, 0);
    assert.ok(past.marker);
  });
  it('cuts across the cap between characters', () => {
    // "é" is C3 A9: a cut after one byte would leave half a character.
    const plan = planAppend(7, bytes('aéé'), 9); // room for a, C3: back to after the a
    assert.equal(Buffer.from(plan.keep).toString(), 'a');
    assert.equal(Buffer.from(planAppend(7, bytes('aéé'), 10).keep).toString(), 'aé');
    assert.equal(charBoundaryAtOrBefore(bytes('🌍'), 3), 0);
    assert.equal(charBoundaryAtOrBefore(bytes('ab'), 1), 1);
  });
});

describe('readWindow', () => {
  it('skips a leading partial character and leaves a trailing one for the next read', () => {
    const all = bytes('a🌍b');
    const w = readWindow(all.subarray(2, 6), 2); // the last 2 bytes of 🌍, then b... cut
    assert.deepEqual([w.start, Buffer.from(w.bytes).toString()], [5, 'b']);
    const t = readWindow(all.subarray(0, 3), 0);
    assert.deepEqual([t.start, Buffer.from(t.bytes).toString()], [0, 'a']);
    const whole = readWindow(all, 0);
    assert.equal(Buffer.from(whole.bytes).toString(), 'a🌍b');
  });
});

describe('prefersText', () => {
  const cases: [string | undefined, boolean][] = [
    [undefined, false], ['application/json', false], ['text/plain', true], ['*/*', false],
    ['text/plain, application/json', false], ['text/plain, application/json;q=0.5', true],
    ['text/*', true], ['text/plain;q=0, */*', false], ['text/plain, */*;q=0.1', true],
  ];
  for (const [accept, text] of cases) it(`${accept ?? '(none)'} → ${text ? 'text' : 'JSON'}`, () => assert.equal(prefersText(accept), text));
});

// ---------------------------------------------------------------- through the API

const CAP = 8192;
let h: Harness;
let t: Tenant;
let agent: TestAgent;

before(async () => {
  h = await startHarness({ orchestration: { logMaxBytes: CAP } });
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['logger'], max_concurrent_jobs: 100 });
});
after(() => h.close());

/** A run of one step (with `extra`), and its command running on `agent`. */
async function runningCommand(extra: Record<string, unknown> = {}, by: TestAgent = agent): Promise<{ runId: string; commandId: string }> {
  const pipeline = await createPipeline(h, t, { name: `out-${Math.random().toString(36).slice(2, 8)}`, steps: [step('scan', { tool: 'logger', ...extra })] });
  const run = await startRun(h, t, pipeline.id);
  await h.settle();
  const commands = await by.poll();
  const mine = commands.find((c) => c.pipeline_run_id === run.id);
  assert.ok(mine, `the run's command was handed out: ${JSON.stringify(commands)}`);
  assert.equal((await by.ack(mine.id)).status, 200);
  assert.equal((await by.start(mine.id)).status, 200);
  return { runId: run.id, commandId: mine.id };
}

type Upload = { offset?: number; range?: string; type?: string; headers?: Record<string, string>; as?: TestAgent };

function upload(commandId: string, data: string | Uint8Array, o: Upload = {}): Promise<Response> {
  const raw = typeof data === 'string' ? bytes(data) : data;
  const headers: Record<string, string> = { 'content-type': o.type ?? 'text/plain; charset=utf-8', ...o.headers };
  if (o.range) headers['content-range'] = o.range;
  const qs = o.offset !== undefined ? `?offset=${o.offset}` : '';
  return h.request('POST', `/api/v1/agent/commands/${commandId}/logs${qs}`, { apiKey: (o.as ?? agent).apiKey, raw: new Uint8Array(raw), headers });
}

/** Appends `data` at `offset` and expects it taken, answering the new length. */
async function append(commandId: string, data: string | Uint8Array, offset: number): Promise<number> {
  const res = await upload(commandId, data, { offset });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const n = typeof data === 'string' ? bytes(data).byteLength : data.byteLength;
  assert.equal(res.body.length, offset + n);
  assert.equal(res.headers.get('x-next-offset'), String(offset + n));
  return res.body.length;
}

function logsPath(runId: string, query = ''): string {
  return `/api/v1/pipeline-runs/${runId}/steps/scan/logs${query}`;
}

async function readJson(runId: string, query = '', token = t.token): Promise<Record<string, any>> {
  const res = await h.request('GET', logsPath(runId, query), { token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

async function readText(runId: string, query = ''): Promise<{ text: string; headers: Headers }> {
  const res = await h.request('GET', logsPath(runId, query), { token: t.token, headers: { accept: 'text/plain' } });
  assert.equal(res.status, 200, String(res.body));
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  // The harness parses what looks like JSON; an empty body comes back as null.
  return { text: res.body === null ? '' : typeof res.body === 'string' ? res.body : JSON.stringify(res.body), headers: res.headers };
}

/** The 416's length, where the error body and the headers put it. */
function assert416(res: Response, length: number, code: string): void {
  assert.equal(res.status, 416, JSON.stringify(res.body));
  assert.equal(res.body.error.code, code);
  assert.equal(res.body.error.length, length);
  assert.deepEqual(res.body.error.details, [{ path: 'length', message: String(length) }]);
  assert.equal(res.headers.get('content-range'), `bytes */${length}`);
  assert.equal(res.headers.get('x-next-offset'), String(length));
}

describe('upload', () => {
  it('appends by ?offset and by Content-Range; reads concatenate the chunks', async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'line 1\n', 0);
    const res = await upload(commandId, 'line 2\n', { range: 'bytes 7-13' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { command_id: commandId, length: 14, truncated: false, duplicate: false });
    const withTotal = await upload(commandId, 'line 3\n', { range: 'bytes 14-20/21', type: 'application/octet-stream' });
    assert.equal(withTotal.status, 200, JSON.stringify(withTotal.body));
    const json = await readJson(runId);
    assert.deepEqual(json.output, { text: 'line 1\nline 2\nline 3\n', offset: 0, next_offset: 21, truncated: false });
    assert.equal(json.attempt, 1);
    assert.equal(json.step_key, 'scan');
    const { rows } = await h.pool.query(`SELECT byte_offset, octet_length(data) AS n FROM command_output_chunks WHERE command_id = $1 ORDER BY byte_offset`, [commandId]);
    assert.deepEqual(rows.map((r) => [Number(r.byte_offset), r.n]), [[0, 7], [7, 7], [14, 7]], 'one chunk per append, keyed by offset');
  });

  it('without a position appends at the end', async () => {
    const { runId, commandId } = await runningCommand();
    for (const part of ['a', 'bc', 'def']) {
      const res = await upload(commandId, part);
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    assert.equal((await readJson(runId)).output.text, 'abcdef');
    // An empty body asks where to resume, and changes nothing.
    const probe = await upload(commandId, '');
    assert.deepEqual([probe.status, probe.body.length], [200, 6]);
  });

  it('a gap and an overlap are 416 with the length to resume from; nothing is stored', async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'hello ', 0);
    assert416(await upload(commandId, 'world', { offset: 10 }), 6, 'offset_mismatch');
    assert416(await upload(commandId, 'world', { range: 'bytes 3-7' }), 6, 'offset_mismatch');
    assert416(await upload(commandId, 'HELLO ', { offset: 0 }), 6, 'output_conflict');
    assert416(await upload(commandId, 'x', { offset: 5 }), 6, 'output_conflict');
    assert.equal((await readJson(runId)).output.text, 'hello ');
    // A first chunk must start at 0.
    const fresh = await runningCommand();
    assert416(await upload(fresh.commandId, 'late', { offset: 4 }), 0, 'offset_mismatch');
  });

  it('a repeated chunk (same range, same bytes) is a no-op answering the length', async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'one\n', 0);
    await append(commandId, 'two\n', 4);
    for (const [data, o] of [['one\n', { offset: 0 }], ['two\n', { range: 'bytes 4-7' }], ['ne\ntw', { offset: 1 }]] as const) {
      const res = await upload(commandId, data, o);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual([res.body.length, res.body.duplicate], [8, true]);
    }
    assert.equal((await readJson(runId)).output.text, 'one\ntwo\n');
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM command_output_chunks WHERE command_id = $1`, [commandId]);
    assert.equal(rows[0].n, 2);
  });

  it('concurrent appends at the same offset: exactly one wins, the other is a 416', async () => {
    const { runId, commandId } = await runningCommand();
    // At 0, when neither has created the output yet, and at 5, when it exists.
    for (const offset of [0, 5]) {
      const results = await Promise.all(['AAAAA', 'BBBBB', 'CCCCC'].map((d) => upload(commandId, d, { offset })));
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 416, 416], JSON.stringify(results.map((r) => r.body)));
      for (const r of results.filter((x) => x.status === 416)) assert.equal(r.body.error.length, offset + 5);
    }
    const text = (await readJson(runId)).output.text as string;
    assert.match(text, /^(A{5}|B{5}|C{5}){2}$/);
  });

  it('positions that disagree, bad Content-Range, JSON bodies and unknown encodings are refused', async () => {
    const { commandId } = await runningCommand();
    const cases: [Response, number, string][] = [
      [await upload(commandId, 'abc', { range: 'bytes 0-9' }), 400, 'Content-Range'],
      [await upload(commandId, 'abc', { range: 'bytes 0-2', offset: 1 }), 400, 'offset'],
      [await upload(commandId, 'abc', { offset: -1 as number }), 400, 'offset'],
      [await upload(commandId, '{"a":1}', { offset: 0, type: 'application/json' }), 415, 'Content-Type'],
    ];
    const unknownEncoding = await upload(commandId, 'abc', { offset: 0, headers: { 'content-encoding': 'br' } });
    assert.equal(unknownEncoding.status, 415, JSON.stringify(unknownEncoding.body));
    for (const [res, status, field] of cases) {
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.ok(Array.isArray(res.body.error.details), `${field}: ${JSON.stringify(res.body)}`);
      assert.ok(res.body.error.details.some((d: { path: string }) => d.path === field), JSON.stringify(res.body));
    }
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM command_output_chunks WHERE command_id = $1`, [commandId]);
    assert.equal(rows[0].n, 0);
  });

  it('a gzip or zstd body is stored decoded (the body layer), its range counted in decoded bytes', async () => {
    const { runId, commandId } = await runningCommand();
    const first = 'compressed output\n'.repeat(100);
    const gz = await upload(commandId, new Uint8Array(gzipSync(first)), { range: `bytes 0-${first.length - 1}`, headers: { 'content-encoding': 'gzip' } });
    assert.equal(gz.status, 200, JSON.stringify(gz.body));
    assert.equal(gz.body.length, first.length);
    const zs = await upload(commandId, new Uint8Array(zstdCompressSync(Buffer.from('zstd too\n'))), { offset: first.length, headers: { 'content-encoding': 'zstd' } });
    assert.equal(zs.status, 200, JSON.stringify(zs.body));
    assert.equal((await readJson(runId)).output.text, first + 'zstd too\n');
  });

  it('only the agent holding the command may upload: another agent or tenant gets 404', async () => {
    const { commandId } = await runningCommand();
    const other = await TestAgent.create(h, t, { tools: ['other'] });
    const t2 = await createTenant(h);
    const foreign = await TestAgent.create(h, t2, { tools: ['logger'] });
    for (const as of [other, foreign]) {
      const res = await upload(commandId, 'intruder', { offset: 0, as });
      assert.equal(res.status, 404, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'not_found');
    }
    assert.equal((await upload('00000000-0000-4000-8000-000000000000', 'x', { offset: 0 })).status, 404);
    assert.equal((await upload('not-a-uuid', 'x', { offset: 0 })).status, 404);
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM command_outputs WHERE command_id = $1`, [commandId]);
    assert.equal(rows[0].n, 0, 'nothing was stored');
  });

  it('uploads after completion are taken for the grace period, then 409', async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'running\n', 0);
    assert.equal((await agent.complete(commandId, { findings_count: 0 })).status, 200);
    await append(commandId, 'flushed after complete\n', 8);
    await h.pool.query(`UPDATE commands SET completed_at = now() - interval '301 seconds' WHERE id = $1`, [commandId]);
    const late = await upload(commandId, 'too late\n', { offset: 31 });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.equal(late.body.error.code, 'output_closed');
    assert.equal((await readJson(runId)).output.text, 'running\nflushed after complete\n');
    await h.settle();
  });

  it('a body over the 1 MiB request limit is a 413, like every route; 1 MiB is taken', async () => {
    const { commandId } = await runningCommand();
    const big = new Uint8Array(MAX_BODY_BYTES + 1).fill(0x61);
    const res = await upload(commandId, big, { offset: 0 });
    assert.equal(res.status, 413, JSON.stringify(res.body));
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM command_output_chunks WHERE command_id = $1`, [commandId]);
    assert.equal(rows[0].n, 0);
    const exact = await upload(commandId, big.subarray(0, MAX_BODY_BYTES), { offset: 0 });
    assert.equal(exact.status, 200, JSON.stringify(exact.body));
    assert.deepEqual([exact.body.length, exact.body.truncated], [MAX_BODY_BYTES, true], 'past LOG_MAX_BYTES in this file');
  });
});

describe('LOG_MAX_BYTES', () => {
  it('past the cap the output ends with a marker; later chunks are accepted and dropped', async () => {
    const { runId, commandId } = await runningCommand();
    const first = 'a'.repeat(5000);
    const second = 'b'.repeat(5000);
    await append(commandId, first, 0);
    const crossing = await upload(commandId, second, { offset: 5000 });
    assert.deepEqual([crossing.status, crossing.body.length, crossing.body.truncated], [200, 10_000, true]);
    for (let i = 0; i < 3; i++) {
      const res = await upload(commandId, 'c'.repeat(1000), { offset: 10_000 + i * 1000 });
      assert.deepEqual([res.status, res.body.length, res.body.truncated], [200, 11_000 + i * 1000, true], JSON.stringify(res.body));
    }
    // A repeat past the cap (nothing stored to compare) is a no-op; a gap is still a 416.
    const again = await upload(commandId, 'c'.repeat(1000), { offset: 12_000 });
    assert.deepEqual([again.status, again.body.duplicate], [200, true]);
    assert416(await upload(commandId, 'd', { offset: 20_000 }), 13_000, 'offset_mismatch');

    const marker = Buffer.from(truncationMarker(CAP)).toString();
    const json = await readJson(runId);
    assert.equal(json.output.truncated, true);
    assert.equal(json.output.text, first + 'b'.repeat(CAP - 5000) + marker);
    assert.equal(json.output.next_offset, CAP + marker.length);
    const { text, headers } = await readText(runId);
    assert.ok(text.endsWith(marker));
    assert.equal(headers.get('x-output-truncated'), 'true');
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n, sum(octet_length(data))::int AS bytes FROM command_output_chunks WHERE command_id = $1`, [commandId]);
    assert.deepEqual(rows[0], { n: 3, bytes: CAP + marker.length }, 'two chunks of output and the marker, once');
  });

  it('the cut at the cap falls between characters', async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'a'.repeat(CAP - 1), 0);
    const res = await upload(commandId, 'éé', { offset: CAP - 1 });
    assert.deepEqual([res.status, res.body.length, res.body.truncated], [200, CAP + 3, true]);
    const text = (await readJson(runId)).output.text as string;
    assert.ok(!text.includes('\uFFFD'), 'no broken character');
    assert.ok(text.startsWith('a'.repeat(CAP - 1) + '\n[scanflow: output truncated'));
  });
});

describe('read', () => {
  it('text/plain answers the bytes with the window in headers; JSON carries events', async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'scanning…\n', 0);
    const { text, headers } = await readText(runId);
    assert.equal(text, 'scanning…\n');
    const n = bytes('scanning…\n').byteLength;
    assert.deepEqual(
      ['x-attempt', 'x-output-offset', 'x-next-offset', 'x-output-length', 'x-output-truncated'].map((k) => headers.get(k)),
      ['1', '0', String(n), String(n), 'false'],
    );
    const json = await readJson(runId);
    assert.deepEqual(Object.keys(json).sort(), ['attempt', 'events', 'output', 'status', 'step_key']);
    assert.equal(json.status, 'running');
    assert.ok(json.events.some((e: any) => e.event === 'pipeline.step.started'), JSON.stringify(json.events));
    // Accept: application/json, or none, is JSON.
    const explicit = await h.request('GET', logsPath(runId), { token: t.token, headers: { accept: 'application/json' } });
    assert.equal(explicit.body.output.text, 'scanning…\n');
  });

  it('a step without output reads as empty text at offset 0', async () => {
    const { runId } = await runningCommand();
    assert.deepEqual((await readJson(runId)).output, { text: '', offset: 0, next_offset: 0, truncated: false });
    const { text, headers } = await readText(runId);
    assert.deepEqual([text, headers.get('x-next-offset')], ['', '0']);
    // A step never dispatched: attempt 0, no output.
    const pipeline = await createPipeline(h, t, { name: 'never', steps: [step('scan', { tool: 'nobody-has-this' })] });
    const run = await startRun(h, t, pipeline.id);
    const json = await readJson(run.id);
    assert.deepEqual([json.attempt, json.output.text, json.output.next_offset], [json.attempt, '', 0]);
    assert.equal((await h.request('GET', logsPath(run.id, '?attempt=2'), { token: t.token })).status, 404);
    await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: t.token });
  });

  it('tails by offset and reads in bounded windows that continue at next_offset', async () => {
    const { runId, commandId } = await runningCommand();
    let length = 0;
    let expected = '';
    for (let i = 0; i < 300; i++) {
      const line = `line ${i}\n`;
      length = await append(commandId, line, length);
      expected += line;
    }
    const tail = await readJson(runId, `?offset=${length - 9}`);
    assert.deepEqual(tail.output, { text: 'line 299\n', offset: length - 9, next_offset: length, truncated: false });
    // Past the end: nothing, from the end.
    assert.deepEqual((await readJson(runId, `?offset=${length + 100}`)).output, { text: '', offset: length, next_offset: length, truncated: false });
    let collected = '';
    let offset = 0;
    let reads = 0;
    for (;;) {
      const { text, headers } = await readText(runId, `?offset=${offset}&limit=100`);
      const next = Number(headers.get('x-next-offset'));
      assert.ok(next - offset <= 100, 'a read is bounded by limit');
      if (next === offset) break;
      collected += text;
      offset = next;
      reads++;
    }
    assert.equal(collected, expected);
    assert.equal(reads, Math.ceil(length / 100));
    // New output after a tail shows up from where the tail stopped.
    await append(commandId, 'more\n', length);
    assert.equal((await readJson(runId, `?offset=${offset}`)).output.text, 'more\n');
    for (const q of ['?limit=15', '?limit=5000000', '?offset=-1', '?offset=x', '?attempt=0', '?attempt=y']) {
      const res = await h.request('GET', logsPath(runId, q), { token: t.token });
      assert.equal(res.status, 400, `${q}: ${JSON.stringify(res.body)}`);
    }
  });

  it('a multi-byte character split between chunks reads whole, at any window', async () => {
    const { runId, commandId } = await runningCommand();
    const text = 'héllo 🌍 wörld — 日本語 ✓\n'.repeat(4);
    const all = bytes(text);
    // Chunks of 3 bytes: nearly every character is split between two uploads.
    for (let at = 0; at < all.byteLength; at += 3) {
      await append(commandId, all.subarray(at, Math.min(at + 3, all.byteLength)), at);
    }
    assert.equal((await readJson(runId)).output.text, text);
    assert.equal((await readText(runId)).text, text);
    for (const limit of [16, 17, 18, 19]) {
      let collected = '';
      let offset = 0;
      for (;;) {
        const json = await readJson(runId, `?offset=${offset}&limit=${limit}`);
        assert.ok(!json.output.text.includes('\uFFFD'), `a window of ${limit} at ${offset} cut a character: ${JSON.stringify(json.output)}`);
        if (json.output.next_offset === offset) break;
        collected += json.output.text;
        offset = json.output.next_offset;
      }
      assert.equal(collected, text, `windows of ${limit} bytes`);
    }
    // An offset inside a character starts at the next one.
    const inside = bytes('h').byteLength + 1; // the second byte of é
    const json = await readJson(runId, `?offset=${inside}&limit=16`);
    assert.equal(json.output.offset, inside + 1);
    assert.ok(json.output.text.startsWith('llo'));
  });

  it('each attempt has its own output; ?attempt= reads an earlier one', async () => {
    const { runId, commandId } = await runningCommand({ max_retries: 1 });
    await append(commandId, 'attempt 1 crashed\n', 0);
    assert.equal((await agent.fail(commandId, { error_message: 'crash' })).status, 200);
    await h.settle();
    await passRetryDelays(h, runId);
    await h.settle();
    const [second] = (await agent.poll()).filter((c) => c.pipeline_run_id === runId);
    assert.ok(second, 'attempt 2 was dispatched');
    assert.notEqual(second.id, commandId);
    assert.equal((await agent.ack(second.id)).status, 200);
    const before = await readJson(runId);
    assert.deepEqual([before.attempt, before.output.text], [2, ''], 'the latest attempt has no output yet');
    await append(second.id, 'attempt 2 ok\n', 0);
    assert.deepEqual([(await readJson(runId)).attempt, (await readJson(runId)).output.text], [2, 'attempt 2 ok\n']);
    const first = await readJson(runId, '?attempt=1');
    assert.deepEqual([first.attempt, first.output.text], [1, 'attempt 1 crashed\n']);
    const { text, headers } = await readText(runId, '?attempt=1');
    assert.deepEqual([text, headers.get('x-attempt')], ['attempt 1 crashed\n', '1']);
    assert.equal((await h.request('GET', logsPath(runId, '?attempt=3'), { token: t.token })).status, 404);
    await agent.start(second.id);
    await agent.complete(second.id);
    await h.settle();
  });

  it("another tenant's read is a 404 and shows nothing", async () => {
    const { runId, commandId } = await runningCommand();
    await append(commandId, 'secret output\n', 0);
    const t2 = await createTenant(h);
    for (const accept of ['application/json', 'text/plain']) {
      const res = await h.request('GET', logsPath(runId), { token: t2.token, headers: { accept } });
      assert.equal(res.status, 404, JSON.stringify(res.body));
      assert.ok(!JSON.stringify(res.body).includes('secret'));
    }
  });
});

describe('OUTPUT_RETENTION', () => {
  it("deletes the output of commands finished longer ago, and only theirs", async () => {
    const old = await runningCommand();
    const recent = await runningCommand();
    const running = await runningCommand();
    for (const c of [old, recent, running]) {
      let at = 0;
      for (const part of ['first\n', 'second\n', 'third\n']) at = await append(c.commandId, part, at);
    }
    await agent.complete(old.commandId);
    await agent.complete(recent.commandId);
    await h.settle();
    const retention = h.orchestration.retention.output!;
    // Time moves for the old command (finished and last written past retention) and for the
    // running one's last write (but it has not finished): only the old output goes.
    await h.pool.query(
      `UPDATE commands SET completed_at = now() - make_interval(secs => $2 + 60) WHERE id = $1`, [old.commandId, retention]);
    await h.pool.query(
      `UPDATE command_outputs SET updated_at = now() - make_interval(secs => $2 + 60) WHERE command_id = ANY ($1)`,
      [[old.commandId, running.commandId], retention]);
    await h.pool.query(
      `UPDATE commands SET completed_at = now() - make_interval(secs => $2 - 60) WHERE id = $1`, [recent.commandId, retention]);

    // A retention pass of output alone. (The worker's cron passes may run too; either may do
    // the work, so the outcome is checked.)
    await retentionPass(withPoolClient(h.pool), { output: retention, events: null, commands: null, deliveries: null });
    const { rows } = await h.pool.query<{ command_id: string; n: number; purged: boolean }>(
      `SELECT o.command_id, (SELECT count(*)::int FROM command_output_chunks k WHERE k.command_id = o.command_id) AS n,
              o.purged_at IS NOT NULL AS purged
       FROM command_outputs o WHERE o.command_id = ANY ($1)`,
      [[old.commandId, recent.commandId, running.commandId]],
    );
    const by = Object.fromEntries(rows.map((r) => [r.command_id, [r.n, r.purged]]));
    assert.deepEqual(by[old.commandId], [0, true]);
    assert.deepEqual(by[recent.commandId], [3, false]);
    assert.deepEqual(by[running.commandId], [3, false]);

    const gone = await readJson(old.runId);
    assert.equal(gone.output.text, '');
    assert.ok(gone.output.removed_at, 'the read says the output was removed');
    const { headers } = await readText(old.runId);
    assert.ok(headers.get('x-output-removed-at'));
    assert.equal((await readJson(recent.runId)).output.text, 'first\nsecond\nthird\n');
    await agent.complete(running.commandId);
    await h.settle();
  });

  it('deletes in bounded batches', async () => {
    // Two days old, purged with a retention of one day: the worker's cron passes (30 days)
    // leave these alone, so every deletion counted here is this test's.
    const aged = async (commandId: string) => {
      await agent.complete(commandId);
      await h.settle();
      await h.pool.query(`UPDATE commands SET completed_at = now() - interval '2 days' WHERE id = $1`, [commandId]);
      await h.pool.query(`UPDATE command_outputs SET updated_at = now() - interval '2 days' WHERE command_id = $1`, [commandId]);
    };
    // A pass's batches: the chunks each deleted (the last one finds nothing left).
    const purge = async (batchRows: number, outputBatchBytes: number) => {
      const batches: number[] = [];
      const report = await retentionPass(withPoolClient(h.pool), { output: 86_400, events: null, commands: null, deliveries: null },
        { batchRows, outputBatchBytes, onBatch: (b) => batches.push(b.rows) });
      assert.equal(report.kinds.output?.rows, batches.reduce((a, b) => a + b, 0));
      return batches;
    };
    const chunksOf = async (commandId: string) =>
      (await h.pool.query(`SELECT count(*)::int AS n FROM command_output_chunks WHERE command_id = $1`, [commandId])).rows[0].n;

    const { commandId } = await runningCommand();
    let at = 0;
    for (let i = 0; i < 30; i++) at = await append(commandId, `${i}\n`, at);
    await aged(commandId);
    // 7 chunks per batch: 30 chunks take 5 batches, the last of which marks the output
    // purged; then one finds nothing.
    assert.deepEqual(await purge(7, 1_000_000), [7, 7, 7, 7, 2, 0]);
    assert.equal(await chunksOf(commandId), 0);
    const head = await h.pool.query(`SELECT purged_at FROM command_outputs WHERE command_id = $1`, [commandId]);
    assert.ok(head.rows[0].purged_at, 'the output is marked purged');
    assert.deepEqual(await purge(7, 1_000_000), [0], 'a purged output is not looked at again');

    // The byte bound: the first chunk always goes, then those that start under it.
    const big = await runningCommand();
    at = 0;
    for (let i = 0; i < 4; i++) at = await append(big.commandId, 'x'.repeat(1000), at);
    await aged(big.commandId);
    assert.deepEqual(await purge(100, 1500), [2, 2, 0]);
    assert.equal(await chunksOf(big.commandId), 0);
    const small = await runningCommand();
    at = 0;
    for (let i = 0; i < 3; i++) at = await append(small.commandId, 'x'.repeat(1000), at);
    await aged(small.commandId);
    assert.deepEqual(await purge(100, 10), [1, 1, 1, 0]);
  });
});
