// Shared helpers of the browser tests: the browser, the server's address, screenshots.
//
// The browser is Debian's chromium (scripts/browser-deps.sh installs it), driven by
// playwright-core, which never downloads a browser of its own. run.sh starts the server and
// sets BASE_URL.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The running server, without a trailing slash (run.sh sets it). */
export const BASE_URL = (process.env.BASE_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');

/** Where `shot` writes its PNG files. */
export const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR ?? path.join(repo, 'target', 'screenshots');

/**
 * Starts headless chromium. The flags keep it quiet and self-contained: no sandbox (CI runs
 * as root in a container), no GPU, no QUIC, and none of the background traffic to Google
 * (component updates, sync, first-run pages).
 */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Writes a full-page PNG of `page` to SCREENSHOT_DIR/<name>.png and returns its path. */
export async function shot(page, name) {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
