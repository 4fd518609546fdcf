// Saves a study's Pareto chart, as the dashboard draws it, to an SVG file (and optionally a
// PNG): what the study page's SVG and PNG downloads give, without clicking.
//
//   node tests/browser/study-chart.mjs http://127.0.0.1:8080 STUDY_ID AXIS OUT.svg [OUT.png]
//
// AXIS: encoder_params, train_speedup, inference_speedup or peak_memory. Needs Chromium
// (CHROMIUM, default /usr/bin/chromium) and the browser test's node modules.
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, study, axis, svgPath, pngPath] = process.argv.slice(2);
if (!base || !study || !axis || !svgPath) {
  console.error("usage: node study-chart.mjs SERVER STUDY_ID AXIS OUT.svg [OUT.png]");
  process.exit(2);
}
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium" });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${base}/studies/${study}`);
  await page.locator("#study-chart .point").first().waitFor({ state: "attached", timeout: 30000 });
  await page.locator("#study-axis").selectOption(axis);
  await page.waitForTimeout(500);
  const href = await page.locator("#study-svg").getAttribute("href");
  const svg = decodeURIComponent(href.replace(/^data:image\/svg\+xml;charset=utf-8,/, ""));
  writeFileSync(svgPath, svg);
  if (pngPath) {
    const [png] = await Promise.all([page.waitForEvent("download"), page.locator("#study-png").click()]);
    await png.saveAs(pngPath);
  }
  console.log(`study ${study} (${axis}) written to ${svgPath}${pngPath ? ` and ${pngPath}` : ""}`);
} finally {
  await browser.close();
}
