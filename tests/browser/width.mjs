// Logs in and reports how wide each given page is laid out in a 1200 px window (whether a
// long subject widens it). Usage: node width.mjs BASE_URL TOKEN PNG PATH...; prints JSON.
import { chromium } from 'playwright-core';

const [base, token, screenshot, ...paths] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${base}/admin`);
  await page.getByLabel('Admin token').fill(token);
  await Promise.all([page.waitForURL(`${base}/admin`), page.getByRole('button', { name: 'Log in' }).click()]);
  const widths = {};
  for (const path of paths) {
    await page.goto(`${base}${path}`);
    widths[path] = await page.evaluate(() => document.documentElement.scrollWidth);
  }
  await page.goto(`${base}/admin`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(widths));
} finally {
  await browser.close();
}
