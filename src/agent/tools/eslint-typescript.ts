// An ESLint parser for TypeScript without typescript-eslint (which needs TypeScript < 6.1;
// this project builds with 7): Node's own type stripping blanks the types out with spaces,
// so every line and column stays where it was, and espree (ESLint's parser) parses the rest.
// Only erasable TypeScript parses (no enum, namespace or parameter properties, no TSX); a file
// with those is reported as not parsed, never as a finding.
import { stripTypeScriptTypes } from 'node:module';
import * as espree from 'espree';

export const meta = { name: 'scanflow-strip-types', version: '1.0.0' };

type ParserOptions = { ecmaVersion?: number | 'latest'; sourceType?: 'script' | 'module' | 'commonjs' };

export function parse(code: string, options: ParserOptions = {}) {
  return parseForESLint(code, options).ast;
}

export function parseForESLint(code: string, options: ParserOptions = {}) {
  const js = stripTypeScriptTypes(code, { mode: 'strip' });
  const ast = espree.parse(js, {
    ecmaVersion: 'latest',
    sourceType: options.sourceType === 'script' ? 'script' : options.sourceType === 'commonjs' ? 'commonjs' : 'module',
    range: true,
    loc: true,
    comment: true,
    tokens: true,
  });
  return { ast };
}
