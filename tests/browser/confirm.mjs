// Opens a confirmation link in headless Chromium (Debian's, not a downloaded one), as a reader
// would from their mail, and clicks the button. Usage: node confirm.mjs LINK
import { chromium } from 'playwright-core';

const [link] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage();
  await page.goto(link);
  const before = (await page.textContent('h1')).trim();
  const button = (await page.textContent('button[type=submit]')).trim();
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  const after = (await page.textContent('h1')).trim();
  console.log(JSON.stringify({ before, button, after }));
} finally {
  await browser.close();
}
