// The storefront and the console, end to end in a real browser: browse → search → open an
// item → register → sign in → add two items → change a quantity → check out → the order
// page follows the saga to Confirmed; the declining card ends Cancelled with its reason; an
// item that sells out says so, refuses the add and is marked in the basket;
// /ops shows that order's saga and trace. Every page is photographed under SCREENSHOT_DIR.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import path from 'node:path';

import { BASE_URL, SCREENSHOT_DIR, launch, shot } from './lib.mjs';

/** How long a checkout may take to reach its end state. */
const SAGA_DEADLINE_MS = 30_000;

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A page that fails the test on any uncaught script error or failed asset. */
async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  return watched(await context.newPage());
}

/** `page`, failing the test on any uncaught script error or failed asset. */
function watched(page) {
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(`page error: ${err.message}`));
  // The Content-Security-Policy allows no inline script or style: anything it blocks is a bug.
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
      page.errors.push(`blocked by the CSP: ${message.text()}`);
    }
  });
  page.on('requestfailed', (request) => {
    // Requests cut short on purpose are not failures: htmx drops a search that a newer
    // keystroke replaced, and leaving a page aborts what it was still loading.
    if (request.failure()?.errorText !== 'net::ERR_ABORTED') {
      page.errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
    }
  });
  page.on('request', (request) => {
    if (!request.url().startsWith(BASE_URL) && !request.url().startsWith('data:')) {
      page.errors.push(`external request: ${request.url()}`);
    }
  });
  return page;
}

function noErrors(page) {
  assert.deepEqual(page.errors, [], 'the page had errors');
}

/** Euros on screen ("€12.50") as cents. */
function cents(text) {
  const match = text.replace(/\s/g, '').match(/-?€(\d+)\.(\d{2})/);
  assert.ok(match, `no amount in ${JSON.stringify(text)}`);
  return Number(match[1]) * 100 + Number(match[2]);
}

async function register(page, { name, email, password }) {
  await page.goto(`${BASE_URL}/register`);
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
}

async function signIn(page, email, password) {
  await page.goto(`${BASE_URL}/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

async function addToBasket(page, search, itemName, quantity) {
  await page.goto(`${BASE_URL}/catalog?q=${encodeURIComponent(search)}`);
  await page.getByRole('link', { name: itemName }).click();
  await page.getByRole('heading', { level: 1, name: itemName }).waitFor();
  await page.getByLabel('Quantity').fill(String(quantity));
  await page.getByRole('button', { name: 'Add to basket' }).click();
  await page.waitForURL(`${BASE_URL}/basket`);
}

/** Places the order with `card` and returns its id (from the order page's address). */
async function checkOut(page, card) {
  await page.goto(`${BASE_URL}/basket`);
  await page.getByRole('link', { name: 'Checkout' }).click();
  await page.getByLabel('Card number').fill(card);
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForURL(/\/orders\/[0-9a-f-]+$/);
  return new URL(page.url()).pathname.split('/').pop();
}

async function waitForStatus(page, status) {
  await page
    .locator('#order-status', { hasText: status })
    .waitFor({ timeout: SAGA_DEADLINE_MS });
}

const password = 'correct-horse-battery-7';
const email = `shopper-${Date.now()}-${process.pid}@example.test`;

test('a new customer shops end to end and watches the order confirm live', async () => {
  const page = await newPage();

  // Home: categories and new items.
  await page.goto(BASE_URL + '/');
  await page.getByRole('heading', { name: 'Categories' }).waitFor();
  assert.ok((await page.locator('ul.categories li').count()) >= 6, 'the home page lists the categories');
  await shot(page, '01-home');

  // Keyboard: the first Tab lands on the skip link, which moves focus to the content.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');

  // Browse and search: htmx updates the results as one types and keeps the address.
  await page.getByRole('link', { name: 'Shop', exact: true }).click();
  await page.waitForURL(`${BASE_URL}/catalog`);
  assert.match(await page.locator('#results .summary').innerText(), /66 items/);
  await shot(page, '02-catalog');
  await page.getByLabel('Search').fill('tea');
  await page.locator('#results .summary', { hasText: /^6 items/ }).waitFor();
  assert.match(page.url(), /q=tea/, 'the search is in the address');
  await page.getByLabel('Sort by').selectOption('price_desc');
  await page.waitForURL(/sort=price_desc/);
  const prices = await page.locator('#results .price').allInnerTexts();
  const sorted = [...prices].map(cents).sort((a, b) => b - a);
  assert.deepEqual(prices.map(cents), sorted, 'dearest first');
  await shot(page, '03-search');

  // An item; adding it asks a visitor to sign in first.
  await page.getByRole('link', { name: 'Japanese Sencha 100g' }).click();
  await page.getByRole('heading', { level: 1, name: 'Japanese Sencha 100g' }).waitFor();
  const image = await page.request.get(`${BASE_URL}${await page.locator('article.item img').getAttribute('src')}`);
  assert.equal(image.status(), 200);
  assert.match(image.headers()['content-type'], /image\/svg\+xml/);
  assert.match(image.headers()['cache-control'], /max-age=/);
  await shot(page, '04-item');
  await page.getByRole('button', { name: 'Add to basket' }).click();
  await page.waitForURL(/\/login\?next=/);

  // Register: the API's refusal shows beside the field, then the account is created.
  await page.getByRole('link', { name: 'Create an account' }).click();
  await register(page, { name: 'Ada Shopper', email, password: 'short' });
  const passwordError = page.locator('#field-password-error');
  await passwordError.waitFor();
  assert.match(await passwordError.innerText(), /at least 10 characters/);
  assert.equal(await page.getByLabel('Password').getAttribute('aria-invalid'), 'true');
  await shot(page, '05-register-error');
  await register(page, { name: 'Ada Shopper', email, password });
  await page.getByText('Your account is ready').waitFor();
  await shot(page, '06-login');

  // A wrong password is refused in words; the right one signs in.
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'do not match' }).waitFor();
  await signIn(page, email, password);

  // Two items, then a quantity changed in place.
  await addToBasket(page, 'tea', 'Japanese Sencha 100g', 1);
  await addToBasket(page, 'mug', 'Stoneware Mug Set of 4', 1);
  const rows = page.locator('table.basket tbody tr');
  assert.equal(await rows.count(), 2, 'two lines in the basket');
  const sencha = rows.filter({ hasText: 'Japanese Sencha 100g' });
  const mug = rows.filter({ hasText: 'Stoneware Mug Set of 4' });
  const senchaPrice = cents(await sencha.locator('td[data-label="Price"]').innerText());
  const mugPrice = cents(await mug.locator('td[data-label="Price"]').innerText());
  await page.getByLabel('Quantity of Japanese Sencha 100g').fill('3');
  await sencha.getByRole('button', { name: 'Update' }).click();
  await page.locator('table.basket tfoot', { hasText: 'Total (4 items)' }).waitFor();
  assert.equal(cents(await page.locator('#basket-total').innerText()), 3 * senchaPrice + mugPrice);

  // A quantity the basket refuses is explained beside its input, and nothing changes.
  await page.getByLabel('Quantity of Stoneware Mug Set of 4').fill('100');
  await mug.getByRole('button', { name: 'Update' }).click();
  const quantityError = page.locator('table.basket small.error');
  await quantityError.waitFor();
  assert.match(await quantityError.innerText(), /99/);
  assert.equal(await page.getByLabel('Quantity of Stoneware Mug Set of 4').inputValue(), '100', 'what was typed is kept');
  assert.equal(cents(await page.locator('#basket-total').innerText()), 3 * senchaPrice + mugPrice);
  await shot(page, '07-basket');

  // Check out with the approved card; the order page follows the saga live.
  await page.getByRole('link', { name: 'Checkout' }).click();
  await page.getByRole('heading', { name: 'Checkout' }).waitFor();
  await shot(page, '08-checkout');
  await page.getByLabel('Card number').fill('12');
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.locator('#field-card-error').waitFor();
  await shot(page, '09-checkout-error');
  await page.getByLabel('Card number').fill('4242 4242 4242 4242');
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForURL(/\/orders\/[0-9a-f-]+$/);
  // The card provider takes a second (run.sh): the page opens Pending and the saga's
  // progress arrives over server-sent events, without a reload (the marker survives).
  assert.match(await page.locator('#order-status').innerText(), /Pending/);
  await shot(page, '10-order-pending');
  await page.evaluate(() => { window.stillTheSamePage = true; });
  await waitForStatus(page, 'Confirmed');
  assert.equal(await page.evaluate(() => window.stillTheSamePage), true, 'the page was not reloaded');
  assert.ok((await page.locator('ol.timeline li').count()) >= 3, 'the timeline shows the saga steps');
  await shot(page, '10-order-confirmed');

  // The basket was emptied by the confirmation (an event, so wait for it).
  await page.goto(`${BASE_URL}/basket`);
  await page.getByText('Your basket is empty').waitFor({ timeout: SAGA_DEADLINE_MS }).catch(async () => {
    await page.reload();
    await page.getByText('Your basket is empty').waitFor({ timeout: SAGA_DEADLINE_MS });
  });
  noErrors(page);
  await page.context().close();
});

let declinedOrder;

test('the declining test card ends the order Cancelled with its reason', async () => {
  const page = await newPage();
  await signIn(page, email, password);
  await addToBasket(page, 'tea', 'Rooibos Vanilla 200g', 2);
  declinedOrder = await checkOut(page, '4000 0000 0000 0002');
  await waitForStatus(page, 'Cancelled');
  const reason = await page.locator('#order-reason').innerText();
  assert.match(reason, /declin/i, `reason: ${reason}`);
  await shot(page, '11-order-cancelled');

  await page.getByRole('link', { name: 'Orders' }).click();
  const orders = page.locator('table.orders tbody tr');
  assert.equal(await orders.count(), 2, 'both orders are listed');
  await shot(page, '12-orders');

  // The console is for admins only.
  const response = await page.goto(`${BASE_URL}/ops`);
  assert.equal(response.status(), 403);
  await page.getByRole('heading', { name: 'Not for you' }).waitFor();
  await shot(page, '13-ops-forbidden');
  noErrors(page);
  await page.context().close();
});

/** An admin's access token, through the API (the demo admin of `tideway up`). */
async function adminToken() {
  const response = await fetch(`${BASE_URL}/api/v1/identity/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'admin@tideway.local', password: 'tideway-admin-1' }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).access_token;
}

/** Waits until `check` answers true, reloading nothing itself; fails after the deadline. */
async function eventually(what, check) {
  const deadline = Date.now() + SAGA_DEADLINE_MS;
  for (;;) {
    if (await check()) return;
    assert.ok(Date.now() < deadline, `${what} did not happen within ${SAGA_DEADLINE_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('an item that sells out says so, refuses the add and is marked in the basket', async () => {
  const page = await newPage();
  await signIn(page, email, password);
  const listed = await (await fetch(`${BASE_URL}/api/v1/catalog/items?page_size=100&sort=price_desc`)).json();
  const item = listed.items.find((i) => i.stock >= 2);
  assert.ok(item, 'an item in stock');

  // In the basket, and its page open, while it is still in stock.
  await page.goto(`${BASE_URL}/items/${item.id}`);
  await page.locator('#stock', { hasText: 'In stock' }).waitFor();
  await page.getByLabel('Quantity').fill('1');
  await page.getByRole('button', { name: 'Add to basket' }).click();
  await page.waitForURL(`${BASE_URL}/basket`);
  const stale = watched(await page.context().newPage());
  await stale.goto(`${BASE_URL}/items/${item.id}`);

  // The last units go (as an admin sets them; a reservation announces the same event).
  const token = await adminToken();
  const set = await fetch(`${BASE_URL}/api/v1/inventory/stock/${item.id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ available: 0 }),
  });
  assert.equal(set.status, 200);

  // The basket marks the line, once the stock level has reached it.
  await eventually('the basket to mark the line sold out', async () => {
    await page.goto(`${BASE_URL}/basket`);
    return (await page.locator('.line-state', { hasText: 'Sold out' }).count()) === 1;
  });
  await shot(page, '14-basket-sold-out');

  // The page opened before: its add is refused, saying why.
  await stale.getByRole('button', { name: 'Add to basket' }).click();
  await stale.getByRole('alert').filter({ hasText: /sold out/i }).waitFor();
  await shot(stale, '15-add-refused-sold-out');

  // The item's page now says so and offers no add.
  await page.goto(`${BASE_URL}/items/${item.id}`);
  await page.locator('#stock', { hasText: 'Sold out' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Add to basket' }).isDisabled(), true);
  await shot(page, '16-item-sold-out');

  // Put it back for the tests after this one, and empty the basket of it.
  await fetch(`${BASE_URL}/api/v1/inventory/stock/${item.id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ available: item.stock }),
  });
  await page.goto(`${BASE_URL}/basket`);
  await page.getByRole('button', { name: `Remove ${item.name}` }).click();
  await page.getByRole('button', { name: `Remove ${item.name}` }).waitFor({ state: 'detached' });
  noErrors(page);
  noErrors(stale);
  await page.context().close();
});

test('the console shows the services, the traffic and the cancelled order\'s saga and trace', async () => {
  assert.ok(declinedOrder, 'the declined checkout ran first');
  const page = await newPage();
  await signIn(page, 'admin@tideway.local', 'tideway-admin-1');
  await page.getByRole('link', { name: 'Ops' }).click();
  await page.getByRole('heading', { name: 'Operations' }).waitFor();

  // The services' table (in the distributed shape a table of replicas follows it).
  const services = page.locator('#panel-services table:not(#replicas) tbody tr');
  assert.ok((await services.count()) >= 8, 'the gateway and seven services');
  assert.equal(
    await page.locator('#panel-services table:not(#replicas) [data-status="ready"]').count(),
    await services.count(),
  );
  const traffic = await page.locator('#panel-traffic').innerText();
  assert.match(traffic, /catalog/);
  assert.match(traffic, /ordering/);

  const saga = page.locator(`#panel-sagas tr[data-order="${declinedOrder}"]`);
  await saga.waitFor();
  assert.match(await saga.innerText(), /cancel|compensat|failed/i);
  assert.ok((await page.locator('#panel-events tbody tr').count()) > 0, 'events on the bus are listed');
  await shot(page, '14-ops');

  // From the order to its trace id and the events that carried it.
  await page.getByLabel('Find an order').fill(declinedOrder);
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(`${BASE_URL}/ops/orders/${declinedOrder}`);
  const trace = (await page.locator('#trace-id').innerText()).trim();
  assert.match(trace, /^[0-9a-f]{32}$/);
  const events = page.locator('#panel-events tbody tr');
  assert.ok((await events.count()) > 0, 'the trace has events');
  for (const text of await events.allInnerTexts()) {
    assert.ok(text.includes(trace), `an event of another trace: ${text}`);
  }
  await shot(page, '15-ops-order');
  noErrors(page);
  await page.context().close();
});

test('the console\'s traffic table and charts fit their panels at 1280, 768 and 375 px', async () => {
  const page = await newPage();
  await signIn(page, 'admin@tideway.local', 'tideway-admin-1');
  for (const width of [1280, 768, 375]) {
    await page.setViewportSize({ width, height: 900 });
    await page.goto(`${BASE_URL}/ops`);
    await page.locator('#panel-traffic table tbody tr').first().waitFor();
    // The background sampler has read since the server started: the charts have points
    // on the first look, and the checkouts of the tests before are among them. (A flat
    // line has no height, so Playwright calls it hidden: wait for it to be there.)
    await page.locator('#panel-charts [data-chart="requests"] g[data-series="gateway"]').waitFor({ state: 'attached' });
    await page.locator('#panel-charts [data-chart="sagas"] g[data-series="checkout started"]').waitFor({ state: 'attached' });
    await page.locator('#panel-charts [data-chart="outbox-pending"] g[data-series="ordering"]').waitFor({ state: 'attached' });
    const fit = await page.evaluate(() => {
      const panel = document.querySelector('#panel-traffic');
      const table = panel.querySelector('table');
      const charts = document.querySelector('#panel-charts');
      const widest = Math.max(...[...charts.querySelectorAll('figure.chart')].map((f) => f.getBoundingClientRect().right));
      return {
        page: document.documentElement.scrollWidth - window.innerWidth,
        tableScroll: table.parentElement.scrollWidth - table.parentElement.clientWidth,
        // Layout widths are fractional; half a pixel is rounding, not overflow.
        tableBox: table.getBoundingClientRect().right - panel.getBoundingClientRect().right,
        panel: panel.clientWidth,
        panelScroll: panel.scrollWidth - panel.clientWidth,
        charts: widest - charts.getBoundingClientRect().right,
      };
    });
    await shot(page, `19-ops-${width}`);
    await page.locator('#panel-traffic').screenshot({ path: path.join(SCREENSHOT_DIR, `19-ops-${width}-traffic.png`) });
    await page.locator('#panel-charts').screenshot({ path: path.join(SCREENSHOT_DIR, `19-ops-${width}-charts.png`) });
    assert.ok(fit.page <= 0, `at ${width}px the console scrolls sideways by ${fit.page}px`);
    assert.ok(fit.tableScroll <= 0, `at ${width}px the traffic table scrolls by ${fit.tableScroll}px inside its ${fit.panel}px panel`);
    assert.ok(fit.tableBox <= 0.5, `at ${width}px the traffic table ends ${fit.tableBox}px past its panel`);
    assert.ok(fit.panelScroll <= 0, `at ${width}px the traffic panel scrolls by ${fit.panelScroll}px`);
    assert.ok(fit.charts <= 0.5, `at ${width}px a chart sticks out of its panel by ${fit.charts}px`);
  }
  noErrors(page);
  await page.context().close();
});

test('pages hold at a phone\'s width', async () => {
  const page = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await page.goto(`${BASE_URL}/catalog?category=coffee`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the catalog scrolls sideways by ${overflow}px`);
  await shot(page, '16-phone-catalog');
  await page.goto(`${BASE_URL}/items/does-not-exist`);
  await page.getByRole('heading', { name: 'Not found' }).waitFor();
  await shot(page, '17-phone-not-found');
  await signIn(page, email, password);
  await page.goto(`${BASE_URL}/orders`);
  const ordersOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(ordersOverflow <= 0, `the orders page scrolls sideways by ${ordersOverflow}px`);
  await shot(page, '18-phone-orders');
  noErrors(page);
  await page.context().close();
});

test('the keyboard alone signs in, in the order the form reads', async () => {
  const page = await newPage();
  await page.goto(`${BASE_URL}/login`);
  const focused = () => page.evaluate(() => {
    const el = document.activeElement;
    return el?.labels?.[0]?.textContent ?? el?.textContent?.trim();
  });
  await page.getByLabel('Email').focus();
  await page.keyboard.type(email);
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'Password');
  await page.keyboard.type(password);
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'Sign in');
  await page.keyboard.press('Enter');
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  // The focus ring is visible on a focused control.
  await page.getByRole('link', { name: 'Shop', exact: true }).focus();
  const ring = await page.evaluate(() => getComputedStyle(document.activeElement).boxShadow);
  assert.notEqual(ring, 'none', 'a focused link shows a focus ring');
  noErrors(page);
  await page.context().close();
});
