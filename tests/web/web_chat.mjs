// Drives hearth's web chat page in headless Chromium over the DevTools protocol (through
// --remote-debugging-pipe: no WebSocket library, no npm package): types a message, presses
// Enter and waits for the streamed reply. Prints one JSON line with what the page showed.
//
//   node tests/web/web_chat.mjs URL MESSAGE [--api-key KEY] [--screenshot FILE] [--chromium PATH]
//
// The page is set to greedy decoding and 30 tokens, so the reply can be compared with the API's.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = process.argv.slice(2);
const option = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? args.splice(i, 2)[1] : fallback; };
const apiKey = option("--api-key", "");
const screenshot = option("--screenshot", "");
const chromiumPath = option("--chromium", "/usr/bin/chromium");
const [url, message] = args;
if (!url || !message) { console.error("usage: web_chat.mjs URL MESSAGE [--api-key KEY] [--screenshot FILE]"); process.exit(2); }

const profile = mkdtempSync(join(tmpdir(), "hearth-chromium-"));
const chrome = spawn(chromiumPath, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check", "--mute-audio",
  "--remote-debugging-pipe", `--user-data-dir=${profile}`, "--window-size=420,800", "about:blank",
], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] });

const deadline = setTimeout(() => fail("timed out after 40 s"), 40000);
function finish(code) { clearTimeout(deadline); try { chrome.kill("SIGKILL"); } catch {} try { rmSync(profile, { recursive: true, force: true }); } catch {} process.exit(code); }
function fail(why) { console.error("web_chat: " + why); finish(1); }
chrome.on("error", (e) => fail("cannot start " + chromiumPath + ": " + e.message));

// The pipe protocol: JSON messages separated by NUL bytes, fd 3 to Chromium, fd 4 from it.
const toChrome = chrome.stdio[3], fromChrome = chrome.stdio[4];
let nextId = 1, inbox = "";
const waiting = new Map();
const listeners = [];
fromChrome.on("data", (chunk) => {
  inbox += chunk.toString("utf8");
  let end;
  while ((end = inbox.indexOf("\0")) >= 0) {
    const msg = JSON.parse(inbox.slice(0, end));
    inbox = inbox.slice(end + 1);
    if (msg.id && waiting.has(msg.id)) {
      const { resolve, reject } = waiting.get(msg.id);
      waiting.delete(msg.id);
      msg.error ? reject(new Error(msg.error.message)) : resolve(msg.result);
    } else if (msg.method) {
      for (const l of listeners) l(msg);
    }
  }
});
function send(method, params = {}, sessionId) {
  const id = nextId++;
  toChrome.write(JSON.stringify({ id, method, params, sessionId }) + "\0");
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const page = (method, params) => send(method, params, sessionId);
  const evaluate = async (expression) => {
    const r = await page("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) throw new Error("in the page: " + (r.exceptionDetails.exception?.description || r.exceptionDetails.text));
    return r.result.value;
  };
  const waitFor = async (expression, what, ms = 20000) => {
    const until = Date.now() + ms;
    for (;;) {
      if (await evaluate(expression)) return;
      if (Date.now() > until) throw new Error("waited in vain for " + what);
      await sleep(50);
    }
  };
  await page("Page.enable");
  await page("Runtime.enable");
  const load = () => new Promise((resolve) => listeners.push((m) => { if (m.method === "Page.loadEventFired" && m.sessionId === sessionId) resolve(); }));

  let loaded = load();
  await page("Page.navigate", { url });
  await loaded;
  // Deterministic replies: greedy, 30 tokens; and the API key if the head wants one.
  await evaluate(`localStorage.clear(); localStorage.setItem("hearth.settings", JSON.stringify(${JSON.stringify({ system: "", temperature: "0", max_tokens: "30", apiKey })})); true`);
  loaded = load();
  await page("Page.reload");
  await loaded;
  await waitFor(`document.getElementById("model").textContent !== "connecting\u2026"`, "the model name");
  const model = await evaluate(`document.getElementById("model").textContent`);

  // Count every change of the reply's text: a streamed reply changes it once per chunk.
  await evaluate(`window.__updates = 0; new MutationObserver((records) => { window.__updates += records.length; })
    .observe(document.getElementById("messages"), { childList: true, subtree: true, characterData: true }); true`);
  await evaluate(`document.getElementById("input").focus(); true`);
  await page("Input.insertText", { text: message });
  for (const type of ["keyDown", "keyUp"])
    await page("Input.dispatchKeyEvent", { type, key: "Enter", code: "Enter", windowsVirtualKeyCode: 13, text: type === "keyDown" ? "\r" : undefined });
  await waitFor(`document.querySelector(".msg.assistant") !== null`, "the reply to start");
  await waitFor(`document.body.dataset.state === "idle" && !document.querySelector(".msg.assistant.streaming")`, "the reply to end");
  const result = await evaluate(`(() => {
    const a = document.querySelector(".msg.assistant");
    const error = document.querySelector(".msg.error");
    const saved = JSON.parse(localStorage.getItem("hearth.conversations") || "[]");
    return { model: document.getElementById("model").textContent, reply: a ? a.querySelector(".text").textContent : "",
             meta: a && a.querySelector(".meta") ? a.querySelector(".meta").textContent : "", error: error ? error.textContent : "",
             updates: window.__updates, saved_conversations: saved.length, saved_messages: saved.length ? saved[0].messages.length : 0 };
  })()`);
  // The cluster panel reads /v1/hearth/status.
  await evaluate(`document.getElementById("cluster-toggle").click(); true`);
  await waitFor(`document.querySelectorAll("#cluster td").length > 0`, "the cluster panel");
  result.cluster_rows = await evaluate(`document.querySelectorAll("#cluster tr").length - 1`);
  result.cluster_text = await evaluate(`document.getElementById("cluster").innerText`);
  if (screenshot) {
    const shot = await page("Page.captureScreenshot", { format: "png" });
    writeFileSync(screenshot, Buffer.from(shot.data, "base64"));
  }
  result.model_at_start = model;
  console.log(JSON.stringify(result));
}

main().then(() => finish(0), (e) => fail(e.message));
