// Opens a confirmation link in headless Chromium (Debian's, not a downloaded one), as a reader
// would from their mail: `look` only opens it, `click` opens it and clicks the button.
// Usage: node confirm.mjs LINK look|click
import { chromium } from 'playwright-core';

const [link, step] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage();
  await page.goto(link);
  const heading = (await page.textContent('h1')).trim();
  const button = (await page.textContent('button[type=submit]')).trim();
  if (step === 'click') {
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    console.log(JSON.stringify({ heading: (await page.textContent('h1')).trim() }));
  } else {
    console.log(JSON.stringify({ heading, button }));
  }
} finally {
  await browser.close();
}
