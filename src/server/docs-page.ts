/**
 * /docs: a self-contained HTML page rendered from the OpenAPI document (no scripts, no CDN,
 * inline CSS only, which helmet's default Content-Security-Policy allows).
 */
import type { OpenApiDocument } from './openapi';

type Schema = Record<string, unknown>;

interface FieldRow {
  name: string;
  type: string;
  required: boolean;
  constraints: string;
  description: string;
}

const HTTP_METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function asSchema(value: unknown): Schema {
  return typeof value === 'object' && value !== null ? (value as Schema) : {};
}

function refName(schema: Schema): string | undefined {
  const ref = schema.$ref;
  return typeof ref === 'string' ? ref.split('/').pop() : undefined;
}

function describeType(schema: Schema): string {
  const name = refName(schema);
  if (name !== undefined) return name;
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (Array.isArray(schema.oneOf)) {
    return `one of ${schema.oneOf.map((variant) => describeVariant(asSchema(variant))).join(', ')}`;
  }
  const type = Array.isArray(schema.type) ? schema.type.join(' | ') : String(schema.type ?? 'any');
  if (type === 'array') return `array of ${describeType(asSchema(schema.items))}`;
  return type;
}

/** A oneOf variant is named by its discriminating `type` constant. */
function describeVariant(variant: Schema): string {
  const tag = asSchema(asSchema(variant.properties).type).const;
  return tag === undefined ? describeType(variant) : `{type: ${JSON.stringify(tag)}}`;
}

function describeConstraints(schema: Schema): string {
  const parts: string[] = [];
  const add = (key: string, label: string): void => {
    if (schema[key] !== undefined) parts.push(`${label} ${JSON.stringify(schema[key])}`);
  };
  add('minimum', 'min');
  add('maximum', 'max');
  add('minLength', 'min length');
  add('maxLength', 'max length');
  add('minItems', 'min items');
  add('maxItems', 'max items');
  add('pattern', 'pattern');
  add('default', 'default');
  const items = asSchema(schema.items);
  if (schema.type === 'array' && (items.minimum !== undefined || items.maximum !== undefined)) {
    parts.push(`items in [${String(items.minimum ?? '')}, ${String(items.maximum ?? '')}]`);
  }
  return parts.join('; ');
}

function collectRows(schema: Schema, prefix: string, rows: FieldRow[], depth = 0): void {
  if (depth > 6) return;
  const properties = asSchema(schema.properties);
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  for (const [name, value] of Object.entries(properties)) {
    const property = asSchema(value);
    const path = prefix === '' ? name : `${prefix}.${name}`;
    rows.push({
      name: path,
      type: describeType(property),
      required: required.has(name),
      constraints: describeConstraints(property),
      description: typeof property.description === 'string' ? property.description : '',
    });
    expandNested(property, path, rows, depth + 1);
  }
}

function expandNested(schema: Schema, path: string, rows: FieldRow[], depth: number): void {
  if (schema.properties !== undefined) collectRows(schema, path, rows, depth);
  const items = asSchema(schema.items);
  if (items.properties !== undefined) collectRows(items, `${path}[]`, rows, depth);
  if (Array.isArray(items.oneOf)) {
    for (const variant of items.oneOf.map(asSchema)) {
      const tag = asSchema(asSchema(variant.properties).type).const;
      collectRows(variant, `${path}[] (type ${JSON.stringify(tag)})`, rows, depth);
    }
  }
}

function renderFieldTable(schema: Schema): string {
  const rows: FieldRow[] = [];
  collectRows(schema, '', rows);
  if (rows.length === 0) return `<p>Type: <code>${escapeHtml(describeType(schema))}</code></p>`;
  const body = rows
    .map(
      (row) =>
        `<tr><td><code>${escapeHtml(row.name)}</code></td><td>${escapeHtml(row.type)}</td>` +
        `<td>${row.required ? 'yes' : ''}</td><td>${escapeHtml(row.constraints)}</td>` +
        `<td>${escapeHtml(row.description)}</td></tr>`,
    )
    .join('\n');
  return (
    '<table><thead><tr><th>field</th><th>type</th><th>required</th><th>constraints</th>' +
    `<th>description</th></tr></thead><tbody>\n${body}\n</tbody></table>`
  );
}

function schemaLink(schema: Schema): string {
  const name = refName(schema);
  if (name === undefined) return escapeHtml(describeType(schema));
  return `<a href="#schema-${escapeHtml(name)}">${escapeHtml(name)}</a>`;
}

function renderOperation(path: string, method: string, operation: Schema): string {
  const parts: string[] = [];
  const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, '-')}`;
  parts.push(
    `<section class="op" id="${escapeHtml(id)}"><h3><span class="method ${method}">` +
      `${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></h3>`,
  );
  if (typeof operation.summary === 'string') {
    parts.push(`<p class="summary">${escapeHtml(operation.summary)}</p>`);
  }
  if (typeof operation.description === 'string') {
    parts.push(`<p>${escapeHtml(operation.description)}</p>`);
  }
  const parameters = Array.isArray(operation.parameters) ? operation.parameters.map(asSchema) : [];
  if (parameters.length > 0) {
    parts.push('<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th>');
    parts.push('<th>constraints</th><th>description</th></tr></thead><tbody>');
    for (const parameter of parameters) {
      const schema = asSchema(parameter.schema);
      parts.push(
        `<tr><td><code>${escapeHtml(String(parameter.name ?? ''))}</code></td>` +
          `<td>${escapeHtml(String(parameter.in ?? ''))}</td>` +
          `<td>${escapeHtml(describeType(schema))}</td>` +
          `<td>${escapeHtml(describeConstraints(schema))}</td>` +
          `<td>${escapeHtml(String(parameter.description ?? ''))}</td></tr>`,
      );
    }
    parts.push('</tbody></table>');
  }
  const requestContent = asSchema(asSchema(asSchema(operation.requestBody).content));
  for (const [mediaType, media] of Object.entries(requestContent)) {
    const mediaObject = asSchema(media);
    parts.push(
      `<h4>Request body (<code>${escapeHtml(mediaType)}</code>): ` +
        `${schemaLink(asSchema(mediaObject.schema))}</h4>`,
    );
    if (mediaObject.example !== undefined) {
      parts.push(`<pre>${escapeHtml(JSON.stringify(mediaObject.example, null, 2))}</pre>`);
    }
  }
  parts.push('<h4>Responses</h4><table><thead><tr><th>status</th><th>body</th>');
  parts.push('<th>description</th></tr></thead><tbody>');
  for (const [status, response] of Object.entries(asSchema(operation.responses))) {
    const responseObject = asSchema(response);
    const bodies = Object.entries(asSchema(responseObject.content)).map(
      ([mediaType, media]) =>
        `<code>${escapeHtml(mediaType)}</code> ${schemaLink(asSchema(asSchema(media).schema))}`,
    );
    parts.push(
      `<tr><td>${escapeHtml(status)}</td><td>${bodies.join('<br>')}</td>` +
        `<td>${escapeHtml(String(responseObject.description ?? ''))}</td></tr>`,
    );
  }
  parts.push('</tbody></table></section>');
  return parts.join('\n');
}

const STYLE = `
body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
pre{background:#f5f5f7;padding:.8rem;overflow:auto;border-radius:6px}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f7}.op{margin:1.5rem 0}.summary{font-weight:600}
.method{display:inline-block;min-width:3.5rem;text-align:center;border-radius:4px;color:#fff;
padding:0 .4rem;font-size:13px}.get{background:#1a7f37}.post{background:#0969da}
.delete{background:#cf222e}.put,.patch{background:#9a6700}`;

/** Renders the whole page; `doc` is the document served at /openapi.json. */
export function renderDocsPage(doc: OpenApiDocument): string {
  const info = asSchema(doc.info);
  const title = String(info.title ?? 'API');
  const operations: string[] = [];
  const toc: string[] = [];
  for (const [path, item] of Object.entries(asSchema(doc.paths))) {
    for (const method of HTTP_METHODS) {
      const operation = asSchema(item)[method];
      if (operation === undefined) continue;
      const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, '-')}`;
      toc.push(
        `<li><a href="#${escapeHtml(id)}">${method.toUpperCase()} ${escapeHtml(path)}</a></li>`,
      );
      operations.push(renderOperation(path, method, asSchema(operation)));
    }
  }
  const schemas = Object.entries(asSchema(asSchema(doc.components).schemas)).map(
    ([name, schema]) =>
      `<section id="schema-${escapeHtml(name)}"><h3>${escapeHtml(name)}</h3>` +
      (typeof asSchema(schema).description === 'string'
        ? `<p>${escapeHtml(String(asSchema(schema).description))}</p>`
        : '') +
      `${renderFieldTable(asSchema(schema))}</section>`,
  );
  const errorCodes = Object.entries(asSchema(doc['x-error-codes'])).map(
    ([code, status]) =>
      `<tr><td><code>${escapeHtml(code)}</code></td><td>${String(status)}</td></tr>`,
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
<p>Version ${escapeHtml(String(info.version ?? ''))} &middot; <a href="/openapi.json">openapi.json</a> (OpenAPI ${escapeHtml(String(doc.openapi ?? ''))})</p>
<p>${escapeHtml(String(info.description ?? ''))}</p>
<h2>Endpoints</h2><ul>${toc.join('\n')}</ul>
${operations.join('\n')}
<h2>Schemas</h2>
${schemas.join('\n')}
<h2>Error codes</h2>
<p>Every error answers <code>{"error": {"code": "...", "message": "..."}}</code> with this status.</p>
<table><thead><tr><th>code</th><th>HTTP status</th></tr></thead><tbody>
${errorCodes.join('\n')}
</tbody></table>
</body></html>
`;
}
