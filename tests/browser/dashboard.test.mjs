// The dashboard end to end in headless Chromium: launch the quick-demo preset on a tiny model,
// watch progress and heatmap cells arrive live, drag a ratio and see the preview change,
// commit, watch stage 2 finish, read the comparison, upload a CSV as a dataset and train on
// it, and survive a lost events connection.
// Run by scripts/browser-test.sh, which prepares a data directory and sets the variables
// below; this script starts the server itself (LIGHTPEFT_BIN) so it can restart it to cut the
// events connection. With only LIGHTPEFT_URL it uses a running server and skips the restart.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { once } from "node:events";
import { join } from "node:path";

const shots = process.env.SCREENSHOT_DIR ?? "target/browser-screenshots";
const model = process.env.MODEL ?? "tiny-bert";
const bin = process.env.LIGHTPEFT_BIN;
const port = process.env.PORT ?? "18080";
const base = bin ? `http://127.0.0.1:${port}` : (process.env.LIGHTPEFT_URL ?? "http://127.0.0.1:8080");
mkdirSync(shots, { recursive: true });

let server = null;
async function startServer(env = {}) {
  const log = openSync(process.env.SERVER_LOG ?? "/dev/null", "a");
  server = spawn(
    bin,
    // The dashboard the binary carries, unless a folder is named.
    ["--data-dir", process.env.LIGHTPEFT_DATA, "serve", "--port", port,
      ...(process.env.DASHBOARD_DIR ? ["--dashboard-dir", process.env.DASHBOARD_DIR] : [])],
    { stdio: ["ignore", log, log], env: { ...process.env, RAYON_NUM_THREADS: "1", ...env } },
  );
  for (let i = 0; i < 240; i++) {
    if (server.exitCode !== null) throw new Error(`the server exited with ${server.exitCode}`);
    try {
      const r = await fetch(`${base}/api/v1/health`);
      if (r.ok || r.status === 401) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("the server did not answer /api/v1/health in 60 s");
}
async function stopServer() {
  if (!server || server.exitCode !== null) return;
  server.kill("SIGTERM");
  const timer = setTimeout(() => server.kill("SIGKILL"), 10000);
  await once(server, "exit");
  clearTimeout(timer);
}
if (bin) await startServer();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(String(e)));

let step = "start";
const log = (s) => {
  step = s;
  console.log(`· ${s}`);
};
const shot = (name, target = page) => target.screenshot({ path: join(shots, `${name}.png`), fullPage: target === page });
const text = async (sel) => (await page.locator(sel).first().textContent())?.trim() ?? "";

try {
  log("open the dashboard");
  await page.goto(base + "/");
  await page.getByRole("heading", { name: "Runs" }).waitFor();
  await page.locator("#link-state", { hasText: "live" }).waitFor({ timeout: 15000 });

  log("open the form generated from the schema");
  await page.getByRole("link", { name: "New experiment" }).first().click();
  await page.locator('label[data-preset="quick_demo"]').waitFor();
  const fields = await page.locator(".field[data-param]").count();
  assert.ok(fields >= 20, `expected one input per hyper-parameter, found ${fields}`);
  await page.locator('label[data-preset="paper"] input').check();
  assert.equal(await page.locator("#p-estimation_steps").inputValue(), "800", "paper preset: 800 estimation steps");
  await page.locator('label[data-preset="quick_demo"] input').check();
  assert.equal(await page.locator("#p-estimation_steps").inputValue(), "200", "quick demo: 200 estimation steps");
  await page.locator("#f-model").selectOption(model);
  await page.locator("#f-task").selectOption("sst2-rt");
  await page.locator("#f-name").fill("browser test");
  // The form leads with task, model, preset and the four ratios; the rest is folded.
  assert.ok(await page.locator("#p-head_ratio").isVisible(), "the ratios lead");
  assert.ok(!(await page.locator("#p-estimation_steps").isVisible()), "the rest is folded");
  await page.locator("#all-params summary").click();
  // The tiny model runs 200 estimation steps in a few seconds: enough for the page to show a
  // running job live.
  await page.locator("#p-estimation_steps").fill("200");

  log("a bad value is explained next to its field, before and after submitting");
  await page.locator("#p-lr").fill("2");
  await page.locator('.field[data-param="lr"] .field-error').waitFor();
  await page.locator("#launch").click();
  await page.locator('.field[data-param="lr"] .field-error').waitFor();
  assert.match(page.url(), /\/new$/, "a rejected form stays on the page");
  await page.locator("#p-lr").fill("0.0003");
  await page.locator('.field[data-param="lr"] .field-error').waitFor({ state: "detached" });
  await shot("new-experiment");

  log("launch the quick demo (estimation + baseline)");
  await page.locator("#launch").click();
  await page.waitForURL(/\/experiments\/\d+$/);
  const estimation = page.locator('.job-card[data-kind="estimation"]');
  await estimation.waitFor();

  log("see progress and heatmap cells appear while the estimation runs");
  // Poll the page while the job runs: progress values and heatmap cells must show up before
  // the job has finished, i.e. live.
  const seen = new Set();
  let liveCells = 0;
  for (let i = 0; i < 600; i++) {
    const status = await estimation.getAttribute("data-status");
    const progress = await estimation.locator(".progress-text").textContent();
    if (status === "running") {
      seen.add(progress);
      liveCells = Math.max(liveCells, await page.locator("#heatmap-head rect.cell").count());
    }
    if (status === "succeeded" || status === "failed") break;
    await page.waitForTimeout(100);
  }
  assert.equal(await estimation.getAttribute("data-status"), "succeeded", "estimation finished");
  assert.ok(seen.size >= 2, `progress moved live (saw ${[...seen].join(" | ")})`);
  assert.ok(liveCells > 0, "head heatmap cells appeared while the job ran");
  const headCells = await page.locator("#heatmap-head rect.cell").count();
  const neuronCells = await page.locator("#heatmap-neuron rect.cell").count();
  assert.ok(headCells > 0 && neuronCells > 0, `heatmaps have cells (${headCells} heads, ${neuronCells} neuron bins)`);
  await page.locator("#heatmap-module rect.cell").first().waitFor();
  await page.locator("#heatmap-rank rect.cell").first().waitFor();
  assert.notEqual(await text("#step-label"), "no snapshot yet");

  log("FFN neurons binned, then every single neuron");
  const layers = headCells / (await page.locator("#heatmap-head").getAttribute("aria-label")).match(/by (\d+) columns/)[1];
  // Mask values over steps: one line per layer for heads and for neurons.
  for (const name of ["Head masks: median per layer", "FFN-neuron masks: median per layer"]) {
    const lines = page.locator(`svg.chart[aria-label="${name}"] polyline.line`);
    await lines.first().waitFor();
    assert.equal(await lines.count(), layers, `${name}: a line per layer`);
  }
  const cellsAre = (n) =>
    page.waitForFunction((n) => Number(document.querySelector("#heatmap-neuron")?.dataset.cells ?? 0) === n, n);
  await page.locator("#neuron-bins").selectOption("16");
  await cellsAre(layers * 16);
  await page.locator("#neuron-bins").selectOption("0");
  await page.waitForFunction(
    (n) => Number(document.querySelector("#heatmap-neuron")?.dataset.cells ?? 0) > n,
    layers * 16,
  );
  assert.match(await page.locator("#heatmap-neuron").getAttribute("aria-label"), /by \d+ columns/);

  log("move a ratio and see the preview change");
  await page.locator("#preview-heads").waitFor({ timeout: 20000 });
  const before = {
    heads: await text("#preview-heads"),
    params: await text("#preview-params"),
    removed: await page.locator("#heatmap-head").getAttribute("data-removed"),
  };
  await page.locator("#plan-head_ratio").fill("0.9");
  await page.waitForFunction((h) => document.querySelector("#preview-heads")?.textContent.trim() !== h, before.heads, {
    timeout: 5000,
  });
  const after = {
    heads: await text("#preview-heads"),
    params: await text("#preview-params"),
    removed: await page.locator("#heatmap-head").getAttribute("data-removed"),
  };
  assert.notEqual(after.heads, before.heads, "heads kept changed");
  assert.notEqual(after.params, before.params, "parameters after changed");
  assert.ok(Number(after.removed) > Number(before.removed), `more head cells marked (${before.removed} → ${after.removed})`);
  const beforeNeurons = await text("#preview-neurons");
  await page.locator("#plan-ffn_ratio").fill("0.6");
  await page.waitForFunction((n) => document.querySelector("#preview-neurons")?.textContent.trim() !== n, beforeNeurons);
  await page.locator("#plan-head_ratio").fill("0.5");
  await page.waitForFunction((h) => document.querySelector("#preview-heads")?.textContent.trim() !== h, after.heads);
  await page.locator("#neuron-bins").selectOption("16");
  await shot("planner", page.locator("#planner"));
  await shot("run-page-estimation");

  log("commit: the plan becomes read-only and stage 2 starts");
  await page.locator("#commit-plan").click();
  await page.locator("#viewing-plan").waitFor();
  assert.ok(await page.locator("#plan-head_ratio").isDisabled(), "a committed plan is read-only");
  assert.equal(await page.locator("#plans li").count(), 1);
  const finetune = page.locator('.job-card[data-kind="finetune"]');
  await finetune.waitFor();

  log("stage 2 and the baseline finish");
  await page.locator('.job-card[data-kind="finetune"][data-status="succeeded"]').waitFor({ timeout: 180000 });
  await page.locator('.job-card[data-kind="baseline"][data-status="succeeded"]').waitFor({ timeout: 180000 });

  log("the comparison lists Light-PEFT next to the baseline");
  const compare = page.locator("#compare-table");
  await compare.locator("th", { hasText: "Light-PEFT" }).waitFor({ timeout: 20000 });
  await compare.locator("th", { hasText: "baseline" }).first().waitFor();
  const rows = await compare.locator("tbody tr").count();
  assert.ok(rows >= 8, `comparison rows: ${rows}`);
  const body = await compare.textContent();
  for (const unit of ["%", "params", "ms", "of baseline"]) assert.ok(body.includes(unit), `comparison shows ${unit}`);
  assert.ok((await page.locator(".downloads a").count()) > 0, "artifacts to download");
  await page.locator("#training-heading").scrollIntoViewIfNeeded().catch(() => {});
  await shot("run-page");
  await shot("compare", page.locator(".compare-box"));

  log("the runs table shows the finished experiment");
  await page.getByRole("link", { name: "Runs" }).first().click();
  const row = page.locator("#runs-table tbody tr").first();
  await row.waitFor();
  await page.waitForFunction(() => /×/.test(document.querySelector("#runs-table tbody tr")?.textContent ?? ""), null, {
    timeout: 15000,
  });
  await shot("runs");
  await page.locator("#runs-filter").fill("no such run");
  assert.equal(await page.locator("#runs-table tbody tr").count(), 0, "filter hides rows");
  await page.locator("#runs-filter").fill("browser");
  assert.equal(await page.locator("#runs-table tbody tr").count(), 1);

  log("the workers table lists the server's own worker and its heartbeat");
  const worker = page.locator("#workers-table tbody tr").first();
  await worker.waitFor();
  const workerText = (await worker.textContent()) ?? "";
  assert.match(workerText, /\/serve/, "the local worker's name");
  assert.match(workerText, /cpu/, "its device");
  assert.match(workerText, /\d+ s ago/, "its heartbeat's age, in seconds");

  log("upload a CSV as a dataset: a bad file is refused, the columns are previewed and mapped");
  await page.getByRole("link", { name: "New experiment" }).first().click();
  await page.locator('label[data-preset="quick_demo"]').waitFor();
  await page.locator("#own-data summary").click();
  const files = mkdtempSync(join(tmpdir(), "lightpeft-upload-"));
  const reviews = (n, label = "verdict") =>
    `id,review,${label}\n` +
    Array.from({ length: n }, (_, i) => `${i},"a ${["good", "bad"][i % 2]} film, take ${i}",${["good", "bad"][i % 2]}`).join("\n") +
    "\n";
  const file = (name, contents) => {
    writeFileSync(join(files, name), contents);
    return join(files, name);
  };
  await page.locator("#ds-train").setInputFiles(file("garbage.csv", Buffer.from([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10, 0, 0, 0, 13])));
  await page.locator(".dataset-form .error", { hasText: "binary data" }).waitFor();
  await page.locator("#ds-train").setInputFiles(file("mine.csv", reviews(40)));
  await page.locator("#ds-preview tbody tr").first().waitFor();
  assert.equal(await page.locator("#ds-preview thead th").count(), 3, "three columns previewed");
  assert.equal(await page.locator("#ds-text").inputValue(), "review", "the text column guessed");
  assert.equal(await page.locator("#ds-label").inputValue(), "verdict", "the label column guessed");
  assert.match(await text("#ds-label-counts"), /bad: 20, good: 20/);
  await page.locator("#ds-dev").setInputFiles(file("held.csv", reviews(10, "stars")));
  await page.locator("#ds-name").fill("browser-reviews");
  await page.locator("#ds-save").click();
  await page.locator(".dataset-form .error", { hasText: "no `verdict` column" }).waitFor();
  await page.locator("#ds-dev").setInputFiles(file("held-fixed.csv", reviews(10)));
  await page.waitForFunction(() => /held-fixed\.csv: 10 rows, 298 bytes/.test(document.querySelector(".dataset-form")?.textContent ?? ""));
  await page.locator("#ds-save").click();
  await page.waitForFunction(() => document.querySelector("#f-task")?.value === "dataset:browser-reviews", null, { timeout: 15000 });
  assert.match(await page.locator("#f-task option:checked").textContent(), /40 train \/ 10 dev examples, 2 classes/);
  await shot("dataset-upload");

  log("launch a quick run on the uploaded dataset");
  await page.locator("#f-model").selectOption(model);
  await page.locator("#f-name").fill("uploaded data");
  await page.locator("#f-with-baseline").uncheck();
  await page.locator("#launch").click();
  await page.waitForURL(/\/experiments\/\d+$/);
  await page.locator('.job-card[data-kind="estimation"][data-status="succeeded"]').waitFor({ timeout: 120000 });

  log("a study on that estimation fills its Pareto chart; a point opens its run");
  await page.locator("#study-launch summary").click();
  await page.locator("#study-preset").selectOption("grid");
  await page.locator("#study-heads").fill("0.25, 0.5");
  await page.locator("#study-ffn").fill("");
  await page.locator("#study-start").click();
  await page.waitForURL(/\/studies\/\d+$/);
  await page.locator("#study-table tbody tr").nth(5).waitFor();
  assert.equal(await page.locator("#study-table tbody tr").count(), 6, "2 baselines, 2 plans, 2 random twins");
  await page.locator("#study-state", { hasText: "finished" }).waitFor({ timeout: 180000 });
  await page.waitForFunction(() => document.querySelectorAll("#study-chart .point").length === 6, null, { timeout: 15000 });
  assert.ok((await page.locator("#study-chart .frontier").count()) + (await page.locator("#study-chart circle[stroke]").count()) > 0, "a frontier is drawn");
  const tableText = await text("#study-table");
  for (const unit of ["%", "params", "×", "MiB", "reference"]) assert.ok(tableText.includes(unit), `study table shows ${unit}`);
  await page.locator("#study-axis").selectOption("train_speedup");
  await page.waitForFunction(() => /speed-up over the all-targets baseline/.test(document.querySelector("#study-chart")?.textContent ?? ""));
  assert.match(await page.locator("#study-svg").getAttribute("href"), /^data:image\/svg\+xml/);
  const [png] = await Promise.all([page.waitForEvent("download"), page.locator("#study-png").click()]);
  assert.match(png.suggestedFilename(), /^study-\d+-train_speedup\.png$/);
  const pngPath = await png.path();
  assert.equal(readFileSync(pngPath).subarray(1, 4).toString(), "PNG", "a PNG file");
  await shot("study");
  const studyUrl = page.url();
  const shownStudy = await (await fetch(`${base}/api/v1/studies/${studyUrl.match(/\/studies\/(\d+)/)[1]}`)).json();
  await page.locator("#study-chart a").first().click();
  await page.waitForURL(/\/experiments\/\d+\?job=\d+$/);
  await page.locator("#experiment-name").waitFor();

  log("a cancelled study resumes from its page");
  const post = (path, body) =>
    fetch(`${base}/api/v1${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const listed = await (await post(`/experiments/${shownStudy.study.experiment_id}/studies`, {
    estimation_job_id: shownStudy.study.estimation_job_id,
    plans: { preset: "list", plans: [{ head_ratio: 0.25 }] },
    baselines: false,
    random: false,
  })).json();
  assert.equal((await post(`/studies/${listed.study.id}/cancel`, {})).status, 202);
  // A run it had started stops first (a resume before that is refused as still stopping).
  for (let i = 0; i < 100; i++) {
    const now = await (await fetch(`${base}/api/v1/studies/${listed.study.id}`)).json();
    if (now.jobs.every((j) => !["queued", "running"].includes(j.status))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await page.goto(`${base}/studies/${listed.study.id}`);
  await page.locator("#study-state", { hasText: "cancelled" }).waitFor({ timeout: 30000 });
  await page.locator("#study-resume").click();
  await page.locator("#study-state", { hasText: "finished" }).waitFor({ timeout: 120000 });
  assert.equal(await page.locator("#study-resume").count(), 0, "nothing left to resume");
  assert.equal(await page.locator("#study-table tbody tr").count(), 1, "the one listed plan");

  await page.getByRole("link", { name: "Runs" }).first().click();
  await page.locator("#runs-table tbody tr", { hasText: "uploaded data" }).waitFor({ timeout: 15000 });

  log("compare two experiments' runs: curves on one axis, parameters side by side, ratios to a chosen baseline");
  await page.locator("#runs-filter").fill("");
  const picks = page.locator("#runs-table tbody tr .compare-pick");
  assert.equal(await picks.count(), 2);
  assert.ok(await page.locator("#compare-runs").isDisabled(), "two runs are needed");
  await picks.nth(0).check();
  await picks.nth(1).check();
  await page.locator("#compare-runs").click();
  await page.waitForURL(/\/compare\?experiments=\d+,\d+$/);
  await page.waitForFunction(() => document.querySelectorAll("#compare-results thead tr:first-child th").length === 3, null, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelectorAll(".compare-page .legend-item").length >= 2, null, { timeout: 15000 });
  const paramCount = (await (await fetch(`${base}/api/v1/schema`)).json()).params.length;
  await page.locator("#compare-only-differences").uncheck();
  assert.equal(await page.locator("#compare-params tbody tr").count(), paramCount, "every parameter side by side");
  await page.locator("#compare-only-differences").check();
  const differing = await page.locator("#compare-params tbody tr").count();
  assert.ok(differing > 0 && differing < paramCount, `only the differences: ${differing}`);
  assert.equal(await page.locator("#compare-params tbody tr.differs").count(), differing);
  await page.locator('#compare-results input[name="compare-baseline"]').nth(1).check();
  const results = await text("#compare-results");
  for (const note of ["vs baseline", "of baseline", "speed-up"]) assert.ok(results.includes(note), `results show ${note}`);
  await shot("compare-runs");
  await page.getByRole("link", { name: "Runs" }).first().click();
  await page.locator("#runs-table tbody tr").first().waitFor();

  if (bin) {
    log("a lost events connection reconnects (server restarted)");
    await stopServer();
    await page.locator("#link-state", { hasText: "reconnecting" }).waitFor({ timeout: 15000 });
    await startServer();
    await page.locator("#link-state", { hasText: "live" }).waitFor({ timeout: 20000 });
    await page.locator("#runs-table tbody tr").first().waitFor();

    log("a server that asks for a token: the header offers a field, and the token works");
    const token = "browser-test-token-0123456789";
    await stopServer();
    await startServer({ LIGHTPEFT_TOKEN: token });
    await page.reload();
    await page.locator("#token").waitFor({ timeout: 15000 });
    assert.equal(await page.locator("#runs-table tbody tr").count(), 0, "nothing is shown without the token");
    await page.locator("#token").fill(token);
    await page.getByRole("button", { name: "Use token" }).click();
    await page.locator("#runs-table tbody tr").first().waitFor({ timeout: 15000 });
    await page.locator("#link-state", { hasText: "live" }).waitFor({ timeout: 15000 });
    assert.equal(await page.locator("#token").count(), 0, "the token field goes once the token works");
  } else {
    console.log("(no LIGHTPEFT_BIN: reconnection not tested)");
  }

  // Resources fail while the server is down (the reconnection test): expected.
  assert.deepEqual(consoleErrors.filter((e) => !/Failed to load resource|ERR_CONNECTION_REFUSED|401/.test(e)), []);
  console.log("browser test passed");
} catch (err) {
  console.error(`browser test failed at: ${step}`);
  console.error(err);
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
  await stopServer();
}
