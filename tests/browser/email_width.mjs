// Opens an email's HTML part (a file) at a phone's width and reports how wide it is laid out
// (whether anything scrolls sideways) and whether the preheader is hidden.
// Usage: node email_width.mjs FILE WIDTH PNG; prints JSON.
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';

const [file, width, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage({ viewport: { width: Number(width), height: 844 }, isMobile: true });
  // An email has no business fetching anything: count what it asks for.
  const requests = [];
  page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
  await page.goto(pathToFileURL(file).href);
  const result = await page.evaluate(() => {
    const first = document.body.firstElementChild;
    const style = first ? getComputedStyle(first) : null;
    return {
      scrollWidth: document.scrollingElement.scrollWidth,
      clientWidth: document.scrollingElement.clientWidth,
      firstTag: first ? first.tagName.toLowerCase() : null,
      firstText: first ? first.textContent.trim().slice(0, 120) : null,
      firstHidden: style ? style.display === 'none' : null,
      visibleText: document.body.innerText,
    };
  });
  result.requests = requests;
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
