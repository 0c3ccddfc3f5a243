// The one error shape of the HTTP API:
// {"error": {"code", "message", "details": [{"path", "message"}]}}.
import type { Problem } from '../domain/problems.ts';

export class ApiError extends Error {
  readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 500 | 503;
  readonly code: string;
  readonly details: Problem[] | undefined;
  constructor(status: ApiError['status'], code: string, message: string, details?: Problem[]) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
  toBody() {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}

export const invalid = (details: Problem[], message = 'The request is invalid') =>
  new ApiError(400, 'invalid_request', message, details);
export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);
export const conflict = (code: string, message: string) => new ApiError(409, code, message);
