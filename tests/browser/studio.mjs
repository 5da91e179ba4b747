// An editor's session in the studio, in headless Chromium (Debian's), by accessible names
// only: log in, add three items (one wrong URL first), create a digest from two of them in
// reverse order, look at the preview at desktop and phone width, send a test (one wrong
// address first), edit the draft (new introduction, one more item) and see the preview
// change, press "Send now"; then a second digest, sent now and cancelled before its time
// comes.
// Usage: node studio.mjs BASE_URL TOKEN SCREENSHOT_DIR; prints what it saw as JSON.
import { chromium } from 'playwright-core';

const [base, token, dir] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
const result = {};
// 120 characters, the length that used to widen the dashboard.
// One unbreakable run in it (a URL), which no line break can save.
const subject = 'Studio_digest:https://example.com/' + 'long_path_segment_'.repeat(6).slice(0, 86);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const blocked = [];
  page.on('console', (m) => { if (m.type() === 'error') blocked.push(m.text()); });
  await page.goto(`${base}/admin/items`);
  await page.getByLabel('Admin token').fill(token);
  await Promise.all([page.waitForURL(`${base}/admin`), page.getByRole('button', { name: 'Log in' }).click()]);
  await page.getByRole('link', { name: 'Items', exact: true }).click();
  await page.waitForURL(`${base}/admin/items`);

  const add = async (title, url, summary) => {
    await page.getByLabel('Title', { exact: true }).fill(title);
    await page.getByLabel('URL', { exact: true }).fill(url);
    await page.getByLabel('Summary', { exact: true }).fill(summary);
    await page.getByLabel('Source', { exact: true }).fill('Studio test');
    await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Add item' }).click()]);
  };
  await add('First item', 'not a url', 'One');
  const url = page.getByLabel('URL', { exact: true });
  const describedBy = await url.getAttribute('aria-describedby');
  result.urlError = describedBy ? (await page.locator(`#${describedBy}`).textContent()).trim() : null;
  result.urlInvalid = await url.getAttribute('aria-invalid');
  await page.screenshot({ path: `${dir}/studio-items-error.png`, fullPage: true });
  await add('First item', 'https://example.com/first', 'One');
  await add('Second item', 'https://example.com/second', 'Two');
  await add('Third item', 'https://example.com/third', 'Three');
  result.pending = await page.locator('#pending-items tbody tr').count();

  await page.getByRole('link', { name: 'Digests', exact: true }).click();
  await page.waitForURL(`${base}/admin/digests`);
  await page.getByLabel('Subject', { exact: true }).fill(subject);
  await page.getByLabel('Introduction', { exact: true }).fill('Hello from the studio.');
  await page.getByLabel('First item', { exact: true }).check();
  await page.getByLabel('Third item', { exact: true }).check();
  // Reorder: the third before the first.
  await page.getByLabel('Position of Third item').fill('1');
  await page.getByLabel('Position of First item').fill('2');
  await Promise.all([page.waitForURL(/\/admin\/digests\/[^/]+$/), page.getByRole('button', { name: 'Create digest' }).click()]);
  result.items = (await page.locator('#digest-items li').allTextContents()).map((t) => t.trim());
  const frame = async (sel) => {
    const box = await page.locator(sel).boundingBox();
    const f = page.frameLocator(sel);
    const text = await f.locator('body').textContent();
    return { width: Math.round(box.width), hasThird: text.includes('Third item') };
  };
  result.desktop = await frame('#preview-desktop');
  result.phone = await frame('#preview-phone');
  result.text = await page.textContent('#preview-text');
  await page.screenshot({ path: `${dir}/studio-digest.png`, fullPage: true });
  // The README's picture (docs/studio.jpg is a copy): the first screenful, small.
  await page.screenshot({ path: `${dir}/studio-tour.jpg`, type: 'jpeg', quality: 55 });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${dir}/studio-digest-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // Send a test: a wrong address first, its message next to the field.
  const testAddress = page.getByLabel('Test address', { exact: true });
  await testAddress.fill('editor@studio.test, not-an-address');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Send test' }).click()]);
  const testDescribedBy = await page.getByLabel('Test address', { exact: true }).getAttribute('aria-describedby');
  result.testError = testDescribedBy ? (await page.locator(`#${testDescribedBy}`).textContent()).trim() : null;
  await page.getByLabel('Test address', { exact: true }).fill('editor@studio.test');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Send test' }).click()]);
  result.testSends = (await page.locator('#test-sends tbody td:first-child').allTextContents()).map((t) => t.trim());
  result.statusAfterTest = (await page.textContent('#digest-status')).trim();
  await page.screenshot({ path: `${dir}/studio-test-sent.png`, fullPage: true });

  // Edit the draft: a new introduction, the second item added last; the preview follows.
  result.textBeforeEdit = await page.textContent('#preview-text');
  await page.getByLabel('Introduction', { exact: true }).fill('Edited in the browser.');
  await page.getByLabel('Second item (pending)', { exact: true }).check();
  await page.getByLabel('Position of Second item').fill('3');
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Save draft' }).click()]);
  result.itemsAfterEdit = (await page.locator('#digest-items li').allTextContents()).map((t) => t.trim());
  result.textAfterEdit = await page.textContent('#preview-text');
  const editedFrame = await page.frameLocator('#preview-desktop').locator('body').textContent();
  result.desktopAfterEdit = editedFrame.includes('Edited in the browser.');
  await page.screenshot({ path: `${dir}/studio-edited.png`, fullPage: true });

  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Send now' }).click()]);
  result.status = (await page.textContent('#digest-status')).trim();

  // A second digest, sent now and stopped with its Cancel button before its time comes (the
  // test drives the scheduler): none of it may go out.
  await page.getByRole('link', { name: 'Items', exact: true }).click();
  await page.waitForURL(`${base}/admin/items`);
  await add('Fourth item', 'https://example.com/fourth', 'Four');
  await page.getByRole('link', { name: 'Digests', exact: true }).click();
  await page.waitForURL(`${base}/admin/digests`);
  await page.getByLabel('Subject', { exact: true }).fill('Cancelled digest');
  await page.getByLabel('Fourth item', { exact: true }).check();
  await Promise.all([page.waitForURL(/\/admin\/digests\/[^/]+$/), page.getByRole('button', { name: 'Create digest' }).click()]);
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Send now' }).click()]);
  result.beforeCancel = (await page.textContent('#digest-status')).trim();
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Cancel' }).click()]);
  result.afterCancel = (await page.textContent('#digest-status')).trim();
  result.cancelButtons = await page.getByRole('button', { name: 'Cancel' }).count();
  await page.screenshot({ path: `${dir}/studio-cancelled.png`, fullPage: true });
  result.blocked = blocked;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
