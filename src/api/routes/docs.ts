// GET /openapi.json (src/api/openapi.ts) and GET /docs: Swagger UI from the swagger-ui-dist
// package, served by this process (no CDN; its validator badge, which calls out, is off).
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Hono } from 'hono';
import type { AppEnv } from '../auth.ts';
import { notFound } from '../errors.ts';
import { openApiDocument } from '../openapi.ts';

const uiDir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

/** The files the page loads, by name (nothing else of the package is served). */
const UI_FILES: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>scanflow API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="docs"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/docs.js"></script>
</body>
</html>
`;

const INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#docs',
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: false,
});
`;

export function docsRoutes() {
  const r = new Hono<AppEnv>();
  const files = new Map<string, Promise<Buffer>>();
  r.get('/openapi.json', (c) => c.json(openApiDocument()));
  r.get('/docs', (c) => c.html(PAGE));
  r.get('/docs/:file', async (c) => {
    const file = c.req.param('file');
    if (file === 'docs.js') return c.body(INIT, 200, { 'Content-Type': 'text/javascript; charset=utf-8' });
    const type = Object.hasOwn(UI_FILES, file) ? UI_FILES[file] : undefined;
    if (!type) throw notFound('file');
    let bytes = files.get(file);
    if (!bytes) files.set(file, (bytes = readFile(path.join(uiDir, file))));
    return c.body(new Uint8Array(await bytes), 200, { 'Content-Type': type });
  });
  return r;
}
