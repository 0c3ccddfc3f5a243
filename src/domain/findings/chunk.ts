// Chunked upload of a large report, as the seed system's SDK makes it (pkg/chunk): the
// envelope {report_id, chunk_index, total_chunks, compression, data, is_final} carries, in
// `data`, base64 of the (gzip-, zstd- or un-)compressed JSON of one chunk {report_id,
// chunk_index, total_chunks, tool?, metadata?, assets?, findings?, is_final}. The first chunk
// carries the report's tool and metadata; the others inherit them. Decompressing is I/O's
// business (src/progression/chunks.ts); the shapes are here.
import * as v from 'valibot';
import { isPlainObject } from '../json.ts';
import { NotFindingsInput } from './model.ts';
import { parseReport, type ParsedReport } from './report.ts';

export const CHUNK_COMPRESSIONS = ['none', 'gzip', 'zstd'] as const;
export type ChunkCompression = (typeof CHUNK_COMPRESSIONS)[number];

/** The most chunks one report may be split into. */
export const MAX_CHUNKS = 100_000;

const ReportId = v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255));
const ChunkIndex = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_CHUNKS - 1));
const TotalChunks = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_CHUNKS));

export const ChunkEnvelope = v.pipe(
  v.looseObject({
    report_id: ReportId,
    chunk_index: ChunkIndex,
    total_chunks: TotalChunks,
    compression: v.optional(v.picklist(CHUNK_COMPRESSIONS, `must be one of ${CHUNK_COMPRESSIONS.join(', ')}`), 'none'),
    data: v.pipe(
      v.string(),
      v.regex(/^[A-Za-z0-9+/\s]*={0,2}\s*$/, 'must be base64 (standard alphabet)'),
      v.examples(['eyJmaW5kaW5ncyI6W119']),
    ),
    is_final: v.optional(v.boolean()),
  }),
  v.forward(
    v.check((e) => e.chunk_index < e.total_chunks, 'must be less than total_chunks'),
    ['chunk_index'],
  ),
);
export type ChunkEnvelopeInput = v.InferOutput<typeof ChunkEnvelope>;

const CHUNK_KEYS = ['report_id', 'chunk_index', 'total_chunks', 'is_final'] as const;

/**
 * A decoded chunk as a report. Its own report_id, chunk_index and total_chunks, when it
 * repeats them, must be the envelope's.
 */
export function parseChunkReport(chunk: unknown, envelope: ChunkEnvelopeInput): ParsedReport {
  if (!isPlainObject(chunk)) {
    throw new NotFindingsInput('The chunk is not a part of a report', [{ path: 'data', message: 'must hold a JSON object (a chunk of a report)' }]);
  }
  for (const key of ['report_id', 'chunk_index', 'total_chunks'] as const) {
    if (chunk[key] !== undefined && chunk[key] !== null && chunk[key] !== envelope[key]) {
      throw new NotFindingsInput('The chunk does not match its envelope', [
        { path: `data.${key}`, message: `is ${JSON.stringify(chunk[key])} but the envelope says ${JSON.stringify(envelope[key])}` },
      ]);
    }
  }
  try {
    return parseReport(chunk, { allowEmpty: true, ignoreKeys: CHUNK_KEYS });
  } catch (err) {
    if (err instanceof NotFindingsInput) {
      throw new NotFindingsInput(err.message, err.problems.map((p) => ({ path: p.path === '(body)' ? 'data' : `data.${p.path}`, message: p.message })));
    }
    throw err;
  }
}
