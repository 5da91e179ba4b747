// Logs in to the dashboard in headless Chromium (Debian's, not a downloaded one), reads what
// an operator sees, and keeps a screenshot. Usage: node dashboard.mjs BASE_URL TOKEN PNG
import { chromium } from 'playwright-core';

const [base, token, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${base}/admin`);
  const loginStatus = await page.locator('h1').textContent();
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${base}/admin`), page.click('button[type=submit]')]);
  await page.waitForSelector('#progress-figure');
  const result = {
    login: loginStatus,
    progress: (await page.textContent('#progress-figure')).trim(),
    bar: await page.getAttribute('[role=progressbar]', 'aria-valuenow'),
    failures: (await page.textContent('#failures')).replace(/\s+/g, ' ').trim(),
    chartBars: await page.locator('#sent-chart rect').count(),
    feedCells: await page.locator('#feeds tr.feed').first().locator('td')
      .evaluateAll((tds) => tds.map((td) => td.textContent.replace(/\s+/g, ' ').trim())),
    failingFeeds: await page.locator('#feeds tr.feed.failing').count(),
    complaints: (await page.textContent('#complaints')).trim(),
    digestComplaints: (await page.textContent('#digest-complaints')).trim(),
    hardBounces: (await page.textContent('#hard-bounces')).trim(),
    cookies: (await page.context().cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite })),
  };
  await page.screenshot({ path: screenshot, fullPage: true });
  // Pause and resume with the real forms (their CSRF token, the browser's own Origin).
  const statusIs = (want) => page.waitForFunction(
    (w) => document.querySelector('#digest-status')?.textContent === w, want, { timeout: 10000 });
  await page.click('form[action$="/pause"] button');
  await statusIs('paused');
  result.afterPause = (await page.textContent('#digest-status')).trim();
  await page.click('form[action$="/resume"] button');
  await page.waitForSelector('form[action$="/pause"] button', { timeout: 10000 });
  result.afterResume = (await page.textContent('#digest-status')).trim();
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
