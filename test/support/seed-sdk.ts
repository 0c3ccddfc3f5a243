// The seed system's Go SDK client (its public repository, pkg/client: client.go and
// command.go; pkg/core: command_poller.go, interfaces.go; pkg/chunk: types.go, splitter.go;
// pkg/ris: the report), request for request: the same
// paths, headers, body shapes (Go's json.Marshal with its omitempty rules), compression and
// retry rules, and responses decoded the way its json.Unmarshal decodes them. Each method
// is named after the SDK function it mirrors. For tests of wire compatibility: nothing here
// knows scanflow.
import http from 'node:http';
import zlib from 'node:zlib';

/** Go's time.Time as encoding/json writes it (RFC 3339 with nanoseconds, trailing zeros cut). */
export function goTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, (_m, ms: string) => `.${`${ms}123456`.replace(/0+$/, '')}Z`);
}
/** Go's zero time.Time, as json.Marshal writes a CommandResult whose CompletedAt was never set. */
export const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

/** HTTPError (client.go): any answer outside 2xx. */
export class HTTPError extends Error {
  readonly statusCode: number;
  readonly body: string;
  constructor(statusCode: number, body: string) {
    super(`http ${statusCode}: ${body}`);
    this.statusCode = statusCode;
    this.body = body;
  }
}

export type SdkConfig = {
  baseURL: string;
  apiKey: string;
  /** Config.AgentID: sent as X-Agent-ID when set. */
  agentID?: string;
  /** Config.EnableCompression (DefaultConfig: true) with CompressionAlgo "zstd" (default) or "gzip". */
  compression?: 'zstd' | 'gzip' | null;
  maxRetries?: number;
  retryDelayMs?: number;
};

/** One request as it went on the wire, for tests to look at. */
export type Sent = { method: string; path: string; headers: Record<string, string>; body: Buffer; rawBody: Buffer; status: number };

/** Command (command.go): what PollCommands decodes each element of the array into. */
export type Command = {
  id: string; tenant_id?: string; source_id?: string; type: string; priority: string; payload?: unknown; status: string;
  error_message?: string; created_at: string; expires_at?: string | null; acknowledged_at?: string | null;
  started_at?: string | null; completed_at?: string | null; result?: unknown;
};

/** core.CommandResult (command_poller.go): status, completed_at, duration_ms, exit_code and findings_count are always sent. */
export type CommandResult = {
  status: string; completed_at: string; duration_ms: number; exit_code: number; findings_count: number;
  error?: string; metadata?: Record<string, unknown>;
};

/** HeartbeatRequest (client.go), in its field order; omitempty on all but status. */
export type HeartbeatRequest = {
  name?: string; status: string; version?: string; hostname?: string; message?: string; scanners?: string[];
  collectors?: string[]; uptime_seconds?: number; total_scans?: number; errors?: number; cpu_percent?: number;
  memory_percent?: number; active_jobs?: number; region?: string;
};

/** core.AgentStatus: what SendHeartbeat is given (it has no version or hostname). */
export type AgentStatus = Omit<HeartbeatRequest, 'version' | 'hostname'> & { name: string };

const HEARTBEAT_FIELDS: (keyof HeartbeatRequest)[] = [
  'name', 'status', 'version', 'hostname', 'message', 'scanners', 'collectors', 'uptime_seconds', 'total_scans',
  'errors', 'cpu_percent', 'memory_percent', 'active_jobs', 'region',
];

/** Go's json.Marshal of a HeartbeatRequest: zero values of omitempty fields are left out. */
export function marshalHeartbeat(req: HeartbeatRequest): string {
  const out: Record<string, unknown> = {};
  for (const key of HEARTBEAT_FIELDS) {
    const value = req[key];
    const empty = value === undefined || value === '' || value === 0 || (Array.isArray(value) && value.length === 0);
    if (key === 'status') out.status = value ?? '';
    else if (!empty) out[key] = value;
  }
  return JSON.stringify(out);
}

/** Go's json.Marshal of a CommandResult (error and metadata omitempty). */
export function marshalCommandResult(r: CommandResult): string {
  const out: Record<string, unknown> = {
    status: r.status, completed_at: r.completed_at, duration_ms: r.duration_ms, exit_code: r.exit_code, findings_count: r.findings_count,
  };
  if (r.error) out.error = r.error;
  if (r.metadata && Object.keys(r.metadata).length > 0) out.metadata = r.metadata;
  return JSON.stringify(out);
}

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const COMMAND_STRINGS = ['id', 'tenant_id', 'source_id', 'type', 'priority', 'status', 'error_message'] as const;
const COMMAND_TIMES = ['created_at', 'expires_at', 'acknowledged_at', 'started_at', 'completed_at'] as const;

/**
 * json.Unmarshal(data, &commands) with commands []Command: the body must be a JSON array
 * (an object fails: "cannot unmarshal object into Go value of type []client.Command"), each
 * known field of its Go type or null (null leaves the zero value), times in RFC 3339.
 */
export function unmarshalCommands(data: string): Command[] {
  const parsed: unknown = JSON.parse(data);
  if (parsed === null) return [];
  if (!Array.isArray(parsed)) throw new Error(`json: cannot unmarshal ${typeof parsed} into Go value of type []client.Command`);
  return parsed.map((c: unknown, i) => {
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new Error(`json: cannot unmarshal element ${i} into client.Command`);
    const o = c as Record<string, unknown>;
    for (const k of COMMAND_STRINGS) {
      if (o[k] != null && typeof o[k] !== 'string') throw new Error(`json: cannot unmarshal ${typeof o[k]} into Go struct field Command.${k} of type string`);
    }
    for (const k of COMMAND_TIMES) {
      if (o[k] != null && (typeof o[k] !== 'string' || !RFC3339.test(o[k] as string))) {
        throw new Error(`parsing time ${JSON.stringify(o[k])} as RFC 3339 (Command.${k})`);
      }
    }
    return o as Command;
  });
}

export class SeedSdkClient {
  readonly config: Required<Omit<SdkConfig, 'agentID' | 'compression'>> & Pick<SdkConfig, 'agentID' | 'compression'>;
  /** Every request sent, with its answer's status. */
  readonly sent: Sent[] = [];
  private readonly agent = new http.Agent({ keepAlive: true });

  constructor(config: SdkConfig) {
    // New(cfg): MaxRetries 3, RetryDelay 2s by default; DefaultConfig compresses with zstd.
    this.config = { maxRetries: 3, retryDelayMs: 2000, compression: 'zstd', ...config };
  }

  close(): void {
    this.agent.destroy();
  }

  /** doRequest: retries 5xx and 429 with exponential backoff, gives up at once on other 4xx. */
  async doRequest(method: string, url: string, body: Buffer | null): Promise<string> {
    let lastErr: unknown;
    for (let attempt = 0; attempt <= this.config.maxRetries; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, this.config.retryDelayMs * 2 ** (attempt - 1)));
      try {
        return await this.doRequestOnce(method, url, body);
      } catch (err) {
        lastErr = err;
        if (err instanceof HTTPError && err.statusCode >= 400 && err.statusCode < 500 && err.statusCode !== 429) throw err;
      }
    }
    throw lastErr;
  }

  /**
   * doRequestOnce: a body over 1 KB is compressed (when compression is on) and sent so when
   * smaller, with Content-Encoding; Content-Type, Authorization: Bearer, User-Agent: sdk/1.0
   * and X-Agent-ID on every request. Go's transport adds Accept-Encoding: gzip, and a
   * Content-Length (0 for a POST without a body; none for a GET).
   */
  doRequestOnce(method: string, url: string, body: Buffer | null): Promise<string> {
    let requestBody = body ?? Buffer.alloc(0);
    let contentEncoding = '';
    if (this.config.compression && requestBody.length > 1024) {
      const compressed = this.config.compression === 'zstd' ? zlib.zstdCompressSync(requestBody, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } }) : zlib.gzipSync(requestBody, { level: 1 });
      if (compressed.length < requestBody.length) {
        requestBody = compressed;
        contentEncoding = this.config.compression;
      }
    }
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      Authorization: `Bearer ${this.config.apiKey}`,
      'User-Agent': 'sdk/1.0',
      'Accept-Encoding': 'gzip',
    };
    if (contentEncoding) headers['Content-Encoding'] = contentEncoding;
    if (this.config.agentID) headers['X-Agent-ID'] = this.config.agentID;
    if (method !== 'GET' || requestBody.length > 0) headers['Content-Length'] = String(requestBody.length);
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const req = http.request(u, { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const data = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          this.sent.push({ method, path: u.pathname + u.search, headers, body: body ?? Buffer.alloc(0), rawBody: requestBody, status });
          if (status < 200 || status >= 300) reject(new HTTPError(status, data));
          else resolve(data);
        });
      });
      req.on('error', reject);
      req.end(requestBody);
    });
  }

  // ---- command.go ----

  /** PollCommands: GET /api/v1/agent/commands?limit=N, the body decoded as a bare []Command. */
  async PollCommands(limit: number): Promise<Command[]> {
    const data = await this.doRequest('GET', `${this.config.baseURL}/api/v1/agent/commands?limit=${limit}`, null);
    return unmarshalCommands(data);
  }

  /** GetCommands: PollCommands(10), keeping id, type, priority and payload (core.Command). */
  async GetCommands(): Promise<{ commands: Pick<Command, 'id' | 'type' | 'priority' | 'payload'>[] }> {
    const commands = await this.PollCommands(10);
    return { commands: commands.map((c) => ({ id: c.id, type: c.type, priority: c.priority, payload: c.payload })) };
  }

  /** AcknowledgeCommand: POST …/acknowledge with no body; the answer is not read. */
  async AcknowledgeCommand(cmdID: string): Promise<void> {
    await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/commands/${cmdID}/acknowledge`, null);
  }

  /** StartCommand: POST …/start with no body. */
  async StartCommand(cmdID: string): Promise<void> {
    await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/commands/${cmdID}/start`, null);
  }

  /** CompleteCommand: POST …/complete with {"result": <the raw result>} ({} when nil). */
  async CompleteCommand(cmdID: string, result: string | null): Promise<void> {
    const body = result === null ? '{}' : `{"result":${result}}`;
    await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/commands/${cmdID}/complete`, Buffer.from(body));
  }

  /** FailCommand: POST …/fail with {"error_message": …}. */
  async FailCommand(cmdID: string, errorMsg: string): Promise<void> {
    await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/commands/${cmdID}/fail`, Buffer.from(JSON.stringify({ error_message: errorMsg })));
  }

  /** ReportCommandResult: completed (or no error) → CompleteCommand(json.Marshal(result)); else FailCommand(result.Error). */
  async ReportCommandResult(cmdID: string, result: CommandResult): Promise<void> {
    if (result.status === 'completed' || !result.error) return this.CompleteCommand(cmdID, marshalCommandResult(result));
    return this.FailCommand(cmdID, result.error);
  }

  // ---- client.go ----

  /** SendHeartbeat: a HeartbeatRequest built from a core.AgentStatus (version and hostname are not copied). */
  async SendHeartbeat(status: AgentStatus): Promise<void> {
    const { name, status: state, scanners, collectors, uptime_seconds, total_scans, errors, message, cpu_percent, memory_percent, active_jobs, region } = status;
    await this.sendHeartbeatRequest({ name, status: state, scanners, collectors, uptime_seconds, total_scans, errors, message, cpu_percent, memory_percent, active_jobs, region });
  }

  /** What SendHeartbeat posts, for a HeartbeatRequest of any fields (the struct has version and hostname too). */
  async sendHeartbeatRequest(req: HeartbeatRequest): Promise<void> {
    await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/heartbeat`, Buffer.from(marshalHeartbeat(req)));
  }

  /** TestConnection: a heartbeat named "connection-test", status running. */
  TestConnection(): Promise<void> {
    return this.SendHeartbeat({ name: 'connection-test', status: 'running', message: 'connection test' });
  }

  // ---- client.go: ingest ----

  /** PushFindings: POST /api/v1/agent/ingest with the report itself (no wrapper); the answer read as IngestResponse. */
  async PushFindings(report: RisReport): Promise<IngestResponse> {
    const data = await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/ingest`, Buffer.from(JSON.stringify(report)));
    return unmarshalIngestResponse(data);
  }

  /** PushAssets: the same report with its findings cleared (omitempty leaves them out). */
  async PushAssets(report: RisReport): Promise<IngestResponse> {
    const { findings: _dropped, ...assetsOnly } = report;
    const data = await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/ingest`, Buffer.from(JSON.stringify(assetsOnly)));
    return unmarshalIngestResponse(data);
  }

  /** CheckFingerprints: POST /api/v1/agent/ingest/check {fingerprints}; nothing is sent for an empty list. */
  async CheckFingerprints(fingerprints: string[]): Promise<{ existing: string[]; missing: string[] }> {
    if (fingerprints.length === 0) return { existing: [], missing: [] };
    const data = await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/ingest/check`, Buffer.from(JSON.stringify({ fingerprints })));
    return unmarshalStruct(data, [], [], ['existing', 'missing'], 'checkFingerprintsResponse');
  }

  /**
   * UploadChunk: the ChunkData's JSON compressed with the client's compressor (zstd when
   * none), base64, in {report_id, chunk_index, total_chunks, compression, data, is_final}.
   */
  async UploadChunk(chunk: ChunkData): Promise<ChunkUploadResponse> {
    const json = Buffer.from(JSON.stringify(chunk));
    const algo = this.config.compression ?? 'zstd';
    const compressed = algo === 'gzip' ? zlib.gzipSync(json) : zlib.zstdCompressSync(json);
    const body = {
      report_id: chunk.report_id, chunk_index: chunk.chunk_index, total_chunks: chunk.total_chunks,
      compression: algo, data: compressed.toString('base64'), is_final: chunk.is_final,
    };
    const data = await this.doRequest('POST', `${this.config.baseURL}/api/v1/agent/ingest/chunk`, Buffer.from(JSON.stringify(body)));
    return unmarshalStruct(data, ['chunk_id', 'report_id', 'status'],
      ['chunk_index', 'assets_created', 'assets_updated', 'findings_created', 'findings_updated', 'findings_skipped'], [], 'ChunkUploadResponse');
  }
}

// ---- ingest (client.go: PushFindings, PushAssets, CheckFingerprints, UploadChunk; pkg/chunk) ----

/** A ris.Report as Go's json.Marshal writes it: build it with only the fields that are set (omitempty). */
export type RisReport = {
  version: string;
  metadata: { id?: string; timestamp: string; [k: string]: unknown };
  tool?: { name: string; version?: string; [k: string]: unknown };
  assets?: Record<string, unknown>[];
  findings?: Record<string, unknown>[];
  [k: string]: unknown;
};

/** IngestResponse (client.go), as json.Unmarshal reads it: errors must be a []string. */
export type IngestResponse = {
  scan_id: string; assets_created: number; assets_updated: number; findings_created: number;
  findings_updated: number; findings_skipped: number; errors: string[];
};

/** ChunkUploadResponse (client.go). */
export type ChunkUploadResponse = {
  chunk_id: string; report_id: string; chunk_index: number; status: string; assets_created: number;
  assets_updated: number; findings_created: number; findings_updated: number; findings_skipped: number;
};

/** chunk.ChunkData: the first chunk carries tool and metadata; tool, metadata, assets and findings omitempty. */
export type ChunkData = {
  report_id: string; chunk_index: number; total_chunks: number; tool?: RisReport['tool']; metadata?: RisReport['metadata'];
  assets?: Record<string, unknown>[]; findings?: Record<string, unknown>[]; is_final: boolean;
};

function goType(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** json.Unmarshal into a struct of strings, ints and a []string: a field of another JSON type fails it. */
function unmarshalStruct<T>(data: string, strings: string[], ints: string[], stringLists: string[], name: string): T {
  const o = JSON.parse(data) as Record<string, unknown>;
  if (goType(o) !== 'object') throw new Error(`json: cannot unmarshal ${goType(o)} into Go value of type client.${name}`);
  for (const k of strings) if (o[k] != null && typeof o[k] !== 'string') throw new Error(`json: cannot unmarshal ${goType(o[k])} into Go struct field ${name}.${k} of type string`);
  for (const k of ints) if (o[k] != null && !Number.isInteger(o[k])) throw new Error(`json: cannot unmarshal ${goType(o[k])} into Go struct field ${name}.${k} of type int`);
  for (const k of stringLists) {
    const list = o[k];
    if (list != null && (!Array.isArray(list) || list.some((s) => typeof s !== 'string'))) {
      throw new Error(`json: cannot unmarshal ${goType(list)} into Go struct field ${name}.${k} of type []string`);
    }
  }
  return o as T;
}

export function unmarshalIngestResponse(data: string): IngestResponse {
  return unmarshalStruct(data, ['scan_id'], ['assets_created', 'assets_updated', 'findings_created', 'findings_updated', 'findings_skipped'], ['errors'], 'IngestResponse');
}

/** chunk.Splitter.Split with a MaxFindingsPerChunk: findings grouped by asset_ref (sorted), each group with its asset. */
export function splitReport(report: RisReport, reportID: string, maxFindingsPerChunk: number): ChunkData[] {
  const assets = new Map((report.assets ?? []).map((a) => [String(a.id), a]));
  const byAsset = new Map<string, Record<string, unknown>[]>();
  const orphans: Record<string, unknown>[] = [];
  for (const f of report.findings ?? []) {
    if (f.asset_ref) byAsset.set(String(f.asset_ref), [...(byAsset.get(String(f.asset_ref)) ?? []), f]);
    else orphans.push(f);
  }
  const chunks: ChunkData[] = [];
  let current: { assets: Record<string, unknown>[]; findings: Record<string, unknown>[] } = { assets: [], findings: [] };
  const added = new Set<string>();
  const flush = () => {
    if (current.assets.length === 0 && current.findings.length === 0) return;
    const chunk: ChunkData = { report_id: reportID, chunk_index: chunks.length, total_chunks: 0, is_final: false };
    if (chunks.length === 0) {
      if (report.tool) chunk.tool = report.tool;
      chunk.metadata = report.metadata;
    }
    if (current.assets.length) chunk.assets = current.assets;
    if (current.findings.length) chunk.findings = current.findings;
    chunks.push(chunk);
    current = { assets: [], findings: [] };
  };
  for (const ref of [...byAsset.keys()].sort()) {
    const findings = byAsset.get(ref)!;
    if (current.findings.length + findings.length > maxFindingsPerChunk) flush();
    const asset = assets.get(ref);
    if (asset && !added.has(ref)) {
      current.assets.push(asset);
      added.add(ref);
    }
    current.findings.push(...findings);
  }
  for (const f of orphans) {
    if (current.findings.length >= maxFindingsPerChunk) flush();
    current.findings.push(f);
  }
  for (const [id, asset] of assets) if (!added.has(id)) current.assets.push(asset);
  flush();
  for (const c of chunks) c.total_chunks = chunks.length;
  if (chunks.length) chunks[chunks.length - 1].is_final = true;
  return chunks;
}
