// The one error shape of the HTTP API:
// {"error": {"code", "message", "details": [{"path", "message"}]}}.
import type { Problem } from '../domain/problems.ts';

export class ApiError extends Error {
  readonly status: 400 | 401 | 403 | 404 | 409 | 410 | 413 | 415 | 416 | 422 | 500 | 503;
  readonly code: string;
  readonly details: Problem[] | undefined;
  /** Values a client acts on, beside code and message (a 416's current `length`). */
  readonly fields: Record<string, string | number | boolean> | undefined;
  constructor(status: ApiError['status'], code: string, message: string, details?: Problem[], fields?: ApiError['fields']) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.fields = fields;
  }
  toBody() {
    return { error: { ...this.fields, code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}

export const invalid = (details: Problem[], message = 'The request is invalid') =>
  new ApiError(400, 'invalid_request', message, details);
export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);
export const conflict = (code: string, message: string) => new ApiError(409, code, message);
