// The ops console's "Versions and mirrors" panel in a real browser. One catalog item gets a
// route of its own, split 80/20 between the catalog in the process and a v2 at a fixed URL
// (`gateway.upstream_urls`, which run.sh points at a port this test serves), with every read
// mirrored to v2. This v2 answers with the item renamed, so every read v1 served differs
// from its shadow. The panel shows both versions with their weights and
// request counts, the mirror's counts and the difference; it is photographed at a normal
// and a narrow width. The gateway's configuration is put back afterwards.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { BASE_URL, SCREENSHOT_DIR, launch } from './lib.mjs';

const V2_PORT = Number(process.env.CATALOG_V2_PORT ?? 0);
/** The route of one item, once `before` found it; its reads are the route itself. */
let ROUTE;
const READS = 60;
/** The panel refreshes every 3 s; a few refreshes at most. */
const PANEL_DEADLINE_MS = 15_000;

const skip = process.env.BROWSER_SHAPE === 'distributed'
  ? 'each gateway replica reports its own traffic; the panel is checked on one process'
  : V2_PORT === 0
    ? 'CATALOG_V2_PORT is not set (run.sh sets it and gives the server the v2 URL)'
    : false;

let browser;
let v2;
let admin;
let original;

async function api(method, url, body) {
  const response = await fetch(`${BASE_URL}${url}`, {
    method,
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 200, `${method} ${url}: ${text}`);
  return JSON.parse(text);
}

before(async () => {
  if (skip) return;
  const login = await fetch(`${BASE_URL}/api/v1/identity/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'admin@tideway.local', password: 'tideway-admin-1' }),
  });
  assert.equal(login.status, 200, 'the admin signs in');
  admin = (await login.json()).access_token;

  // v2: v1's answer with the item renamed; nothing else.
  const page = await (await fetch(`${BASE_URL}/api/v1/catalog/items?page_size=1&sort=newest`)).json();
  assert.ok(page.items.length > 0, 'the catalog lists items');
  ROUTE = `/api/v1/catalog/items/${page.items[0].id}`;
  const v1 = await (await fetch(`${BASE_URL}${ROUTE}`)).json();
  const changed = { ...v1, name: `${v1.name} (new)` };
  v2 = http.createServer((request, response) => {
    const ours = request.method === 'GET' && request.url === ROUTE;
    const body = JSON.stringify(ours ? changed : { status: 404, title: 'Not Found' });
    // A known length: the gateway compares answers of a known size only.
    response.writeHead(ours ? 200 : 404, {
      'content-type': ours ? 'application/json' : 'application/problem+json',
      'content-length': Buffer.byteLength(body),
      'x-tideway-version': 'v2',
    });
    response.end(body);
  });
  await new Promise((resolve, reject) => {
    v2.once('error', reject);
    v2.listen(V2_PORT, '127.0.0.1', resolve);
  });

  original = (await api('GET', '/api/v1/admin/config')).config;
  const config = structuredClone(original);
  config.routes.push({
    prefix: ROUTE,
    upstream: 'catalog',
    read: 'public',
    write: 'role:admin',
    versions: { catalog: 80, 'catalog@v2': 20 },
    mirror: { to: 'catalog@v2', percent: 100 },
  });
  await api('PUT', '/api/v1/admin/config', config);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  if (original) await api('PUT', '/api/v1/admin/config', original);
  await new Promise((resolve) => (v2 ? v2.close(resolve) : resolve()));
});

/** A screenshot of the panel alone at `width`. */
async function shootPanel(page, width, name) {
  await page.setViewportSize({ width, height: 900 });
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  const panel = page.locator('#panel-edge');
  // From the top of the page, so the sticky header stays there and not over the panel.
  await page.evaluate(() => window.scrollTo(0, 0));
  const box = await panel.boundingBox();
  assert.ok(box.width <= width, `the panel fits ${width} px (${box.width} px wide)`);
  const content = await panel.evaluate((el) => [el.scrollWidth, el.clientWidth]);
  assert.ok(content[0] <= content[1], `nothing in the panel scrolls sideways at ${width} px: ${content}`);
  await page.screenshot({ path: file, fullPage: true, clip: box });
  return file;
}

test('the console shows a canary split with its counts and a mirror difference', { skip }, async () => {
  // Anonymous reads, split at random (no sticky cookie): count who answered each.
  let fromV2 = 0;
  for (let i = 0; i < READS; i += 1) {
    const response = await fetch(`${BASE_URL}${ROUTE}`);
    assert.equal(response.status, 200);
    await response.arrayBuffer();
    if (response.headers.get('x-tideway-version') === 'v2') fromV2 += 1;
  }
  const fromV1 = READS - fromV2;
  // 20 % of 60: the chance that either version got none is below one in a million.
  assert.ok(fromV2 > 0 && fromV1 > 0, `v1 ${fromV1}, v2 ${fromV2}`);

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  // Straight to the console: the home page would load the item's image through the route.
  await page.goto(`${BASE_URL}/login?next=%2Fops`);
  await page.getByLabel('Email').fill('admin@tideway.local');
  await page.getByLabel('Password').fill('tideway-admin-1');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE_URL}/ops`);
  const panel = page.locator('#panel-edge');
  await panel.getByRole('heading', { name: 'Versions and mirrors' }).waitFor();

  // Each version's row: its weight and the requests it served.
  const cells = (version) =>
    panel.locator(`tr[data-route="${ROUTE}"][data-version="${version}"] td`);
  const row = async (version) => (await cells(version).allInnerTexts()).map((t) => t.trim());
  await cells('catalog@v2').first().waitFor({ timeout: PANEL_DEADLINE_MS });
  const [v1Row, v2Row] = [await row('catalog'), await row('catalog@v2')];
  assert.deepEqual(v1Row.slice(0, 4), [ROUTE, 'catalog', '80', String(fromV1)]);
  assert.deepEqual(v2Row.slice(0, 4), [ROUTE, 'catalog@v2', '20', String(fromV2)]);
  assert.deepEqual([v1Row[4], v2Row[4]], ['0', '0'], 'no errors');

  // The mirror: every read copied; those v1 served differ from v2's answer, the others
  // are the same. The shadow calls finish after the answers, so wait for the counts.
  const mirror = panel.locator(`tr[data-mirror="${ROUTE}"]`);
  const expected = [ROUTE, String(READS), String(fromV2), String(fromV1), '0', '0'];
  const deadline = Date.now() + PANEL_DEADLINE_MS;
  let counts = [];
  for (;;) {
    counts = (await mirror.locator('td').allInnerTexts()).map((t) => t.trim());
    if (JSON.stringify(counts) === JSON.stringify(expected) || Date.now() > deadline) break;
    // The panel swaps itself in every 3 s: wait for the next one.
    await page.waitForResponse((r) => r.url().endsWith('/ops/edge'), { timeout: PANEL_DEADLINE_MS });
  }
  assert.deepEqual(counts, expected, 'route, mirrored, same, different, failed, dropped');
  const difference = panel.locator('ul.edge-diffs li').first();
  assert.match(
    await difference.innerText(),
    /^GET \/api\/v1\/catalog\/items\/[0-9a-f-]+ → catalog@v2: \/name \(200 vs 200\)$/,
  );
  assert.match(await panel.locator('ul.edge-events').innerText(), /configuration replaced/);

  await shootPanel(page, 1280, 'edge-01-panel');
  await shootPanel(page, 390, 'edge-02-panel-narrow');
  assert.deepEqual(errors, [], 'no script errors');
  await context.close();
});
