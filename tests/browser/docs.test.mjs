// The API reference at /api/docs: Swagger UI (vendored, loaded from files) renders the
// gateway's merged OpenAPI document with every service's operations, under the page's
// Content-Security-Policy, with no script error and no refused resource; every operation
// at its /api/v1 path.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BASE_URL, launch, shot } from './lib.mjs';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('the API reference shows every service and each operation of the document', async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  try {
    const response = await page.goto(`${BASE_URL}/api/docs`);
    assert.equal(response.status(), 200);
    const csp = response.headers()['content-security-policy'] ?? '';
    assert.match(csp, /script-src 'self';/, csp);

    const document = await (await fetch(`${BASE_URL}/api/openapi.json`)).json();
    const operations = Object.values(document.paths)
      .reduce((n, path) => n + Object.keys(path).length, 0);

    for (const tag of ['identity', 'catalog', 'basket', 'ordering', 'inventory', 'payment', 'notification', 'reporting', 'gateway', 'flags', 'audit']) {
      await page.locator(`#operations-tag-${tag}`).waitFor({ timeout: 15000 });
    }
    await page.waitForFunction(
      (n) => document.querySelectorAll('.opblock').length === n,
      operations,
      { timeout: 15000 },
    );
    assert.equal(await page.locator('.opblock').count(), operations);
    assert.equal(operations, 45);
    // Each at its canonical v1 path (the unversioned aliases are not operations).
    const shown = await page.locator('.opblock-summary-path')
      .evaluateAll((spans) => spans.map((span) => span.getAttribute('data-path')));
    assert.equal(shown.length, operations);
    assert.ok(shown.every((path) => path.startsWith('/api/v1/')), shown.join(' '));
    // The bearer scheme is offered for the protected operations.
    await page.locator('button.authorize').waitFor({ timeout: 5000 });
    assert.deepEqual(problems, []);
    await shot(page, 'api-docs');
  } finally {
    await page.close();
  }
});
