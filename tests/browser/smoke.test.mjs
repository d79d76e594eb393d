// Proves the harness end to end: the server run.sh started answers, chromium loads a page
// from it, and a screenshot lands in SCREENSHOT_DIR.

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

test('chromium loads /health/ready and sees a ready server', async () => {
  const page = await browser.newPage();
  try {
    const response = await page.goto(`${BASE_URL}/health/ready`);
    assert.ok(response, 'no response for /health/ready');
    assert.equal(response.status(), 200);

    // What the page shows (chromium renders JSON as text, maybe with its own viewer
    // around it) must say "ready"; the body it was given must be the readiness JSON.
    const text = await page.locator('body').innerText();
    assert.match(text, /\bready\b/, `page text: ${text}`);
    const contentType = response.headers()['content-type'] ?? '';
    if (contentType.includes('json')) {
      const body = await response.json();
      assert.equal(body.status, 'ready', `readiness body: ${JSON.stringify(body)}`);
    }

    await shot(page, 'smoke-health-ready');
  } finally {
    await page.close();
  }
});
