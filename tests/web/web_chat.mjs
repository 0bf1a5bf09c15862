// Drives hearth's web chat page in headless Chromium over the DevTools protocol (through
// --remote-debugging-pipe: no WebSocket library, no npm package): types a message, presses
// Enter and waits for the streamed reply. Prints one JSON line with what the page showed.
//
//   node tests/web/web_chat.mjs URL MESSAGE [--api-key KEY] [--screenshot FILE] [--chromium PATH]
//   node tests/web/web_chat.mjs URL - --pick-model ID [--launch-ctx N] [--launch-kv TYPE] [--launch-streams N]
//                                    [--launch-wire TYPE] [--launch-draft SOURCE]
//
// With --pick-model it only opens the header's model picker, loads model ID from it and reports
// the list, the launch's progress and the header afterwards.
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
const pickModel = option("--pick-model", "");
// The picker's launch options to choose before loading (the select's values; empty: leave as is).
const launchChoices = { "launch-ctx": option("--launch-ctx", ""), "launch-kv": option("--launch-kv", ""),
                        "launch-streams": option("--launch-streams", ""), "launch-wire": option("--launch-wire", ""),
                        "launch-draft": option("--launch-draft", "") };
const [url, message] = args;
if (!url || !message) { console.error("usage: web_chat.mjs URL MESSAGE [--api-key KEY] [--screenshot FILE]"); process.exit(2); }

const profile = mkdtempSync(join(tmpdir(), "hearth-chromium-"));
const chrome = spawn(chromiumPath, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check", "--mute-audio",
  "--remote-debugging-pipe", `--user-data-dir=${profile}`, "--window-size=420,800", "about:blank",
], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] });

const deadline = setTimeout(() => fail("timed out after 60 s"), 60000);
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
  if (pickModel) {
    const item = `document.querySelector('#model-list li[data-id=${JSON.stringify(pickModel)}]')`;
    await evaluate(`document.getElementById("model").click(); true`);
    await waitFor(`${item} !== null && ${item}.querySelector("button") !== null`, "the model picker to list " + pickModel);
    const listed = await evaluate(`[...document.querySelectorAll("#model-list li")].map((li) => li.innerText)`);
    for (const [select, value] of Object.entries(launchChoices))
      if (value) await evaluate(`document.getElementById(${JSON.stringify(select)}).value = ${JSON.stringify(value)}; true`);
    // What the page asks the head for: the launch request's body, as sent.
    await evaluate(`(() => { window.launchBodies = []; const original = window.fetch;
      window.fetch = (u, o) => { if (String(u).includes("hearth/launch")) window.launchBodies.push(o && o.body); return original(u, o); };
      return true; })()`);
    await evaluate(`${item}.querySelector("button").click(); true`);
    await waitFor(`/is loaded|failed/.test(document.getElementById("launch-progress").textContent)`, "the launch to end", 45000);
    const progress = await evaluate(`document.getElementById("launch-progress").textContent`);
    await waitFor(`${item} !== null && ${item}.classList.contains("loaded")`, "the picker to mark it loaded");
    await waitFor(`document.getElementById("model").textContent.startsWith(${JSON.stringify(pickModel)})`, "the header to name it");
    const after = await evaluate(`document.getElementById("model").textContent`);
    const scroll = await evaluate(`document.querySelector("#models form").scrollWidth > document.querySelector("#models form").clientWidth`);
    if (screenshot) {
      const shot = await page("Page.captureScreenshot", { format: "png" });
      writeFileSync(screenshot, Buffer.from(shot.data, "base64"));
    }
    const sent = await evaluate(`window.launchBodies.map((b) => JSON.parse(b))`);
    console.log(JSON.stringify({ model_at_start: model, listed, progress, model_after: after, picker_horizontal_scroll: scroll,
                                 launch_bodies: sent }));
    finish(0);
    return;
  }

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
    return { model: document.getElementById("model").textContent, reply: saved.length ? (saved[0].messages[1] || {}).content || "" : "",
             meta: a && a.querySelector(".meta") ? a.querySelector(".meta").textContent : "", error: error ? error.textContent : "",
             updates: window.__updates, saved_conversations: saved.length, saved_messages: saved.length ? saved[0].messages.length : 0 };
  })()`);
  // The cluster panel reads /v1/hearth/status.
  await evaluate(`document.getElementById("cluster-toggle").click(); true`);
  await waitFor(`document.querySelectorAll("#cluster td").length > 0`, "the cluster panel");
  result.cluster_rows = await evaluate(`document.querySelectorAll("#cluster tr").length - 1`);
  result.cluster_text = await evaluate(`document.getElementById("cluster").innerText`);
  result.model_at_start = model;
  const saved = `JSON.parse(localStorage.getItem("hearth.conversations"))[0].messages`;
  const idle = `document.body.dataset.state === "idle" && !document.querySelector(".msg.assistant.streaming")`;
  const button = (label) => `[...document.querySelectorAll(".msg .actions button")].find((b) => b.textContent.includes("${label}"))`;

  // Regenerate answers the last message again (greedy: the same text).
  await evaluate(`${button("Regenerate")}.click(); true`);
  await waitFor(`${idle} && ${saved}.length === 2`, "the regenerated reply");
  result.regenerated = await evaluate(`${saved}[1].content`);
  // Edit puts the last message back in the box and takes it and its reply out; Enter sends it again.
  await evaluate(`${button("Edit")}.click(); true`);
  result.edit_input = await evaluate(`document.getElementById("input").value`);
  result.edit_saved = await evaluate(`${saved}.length`);
  await evaluate(`document.getElementById("input").focus(); true`);
  for (const type of ["keyDown", "keyUp"])
    await page("Input.dispatchKeyEvent", { type, key: "Enter", code: "Enter", windowsVirtualKeyCode: 13, text: type === "keyDown" ? "\r" : undefined });
  await waitFor(`${idle} && ${saved}.length === 2 && ${saved}[1].role === "assistant"`, "the reply to the edited message");
  result.edited_reply = await evaluate(`${saved}[1].content`);

  // A reply with Markdown and hostile HTML, as a model could write it: the Markdown renders, the
  // HTML stays text (no element of it reaches the page, no handler runs).
  const hostile = [
    "Some **bold**, *emphasis*, _more_ and `a<b>` code.", "",
    "```js", "console.log(\"<b>hi</b>\");", "```", "",
    "- one", "- two <script>window.__pwned = 1</script>", "", "1. first", "2. second", "",
    "| name | value |", "|---|---|", "| <img src=x onerror=\"window.__pwned = 2\"> | _c_ |", "",
    "[the docs](https://example.org/docs?a=1) and [not a link](javascript:window.__pwned=5)", "",
    "> quoted *words*", "> and more", "",
    "- outer", "  - inner one", "  - inner two", "",
    "<iframe src=\"javascript:window.__pwned = 3\"></iframe> <a href=\"javascript:window.__pwned = 4\">link</a> <style>body{display:none}</style>",
  ].join("\n");
  const conversation = { id: "md", title: "markdown", updated: Date.now(), messages: [{ role: "user", content: "<b>not bold</b>" }, { role: "assistant", content: hostile }] };
  await evaluate(`localStorage.setItem("hearth.conversations", ${JSON.stringify(JSON.stringify([conversation]))}); localStorage.setItem("hearth.current", '"md"'); true`);
  loaded = load();
  await page("Page.reload");
  await loaded;
  await sleep(300);
  result.markdown = await evaluate(`(() => {
    const box = document.getElementById("messages");
    const a = box.querySelector(".msg.assistant .text");
    return { pwned: window.__pwned || 0, elements: box.querySelectorAll("script, img, iframe, style, b, a:not([href^='https:'])").length,
             links: [...a.querySelectorAll("a")].map((l) => l.href + " " + l.textContent + " " + l.rel),
             quote: (a.querySelector("blockquote") || {}).textContent || "", nested: a.querySelectorAll("ul li ul li").length,
             code: (a.querySelector(".code pre code") || {}).textContent || "", copy: !!a.querySelector(".code .copy"),
             items: a.querySelectorAll("ul > li").length + a.querySelectorAll("ol > li").length,
             cells: a.querySelectorAll(".table td").length, strong: a.querySelectorAll("strong").length, em: a.querySelectorAll("em").length,
             inline_code: (a.querySelector("p code") || {}).textContent || "", text: a.textContent,
             user: box.querySelector(".msg.user .text").textContent, visible: getComputedStyle(document.body).display !== "none" };
  })()`);

  // A conversation longer than the model's context: the page leaves out its oldest exchanges,
  // says so, and the new message is answered.
  const words = (k) => Array.from({ length: 200 }, (_, i) => ["the", "little", "dog", "ran", "to", "a", "big", "tree"][(i + k) % 8]).join(" ");
  const long = { id: "long", title: "long", updated: Date.now(), messages: [] };
  for (let k = 0; k < 6; k++) long.messages.push({ role: "user", content: "Tell me " + words(k) }, { role: "assistant", content: words(k + 3) });
  await evaluate(`localStorage.setItem("hearth.conversations", ${JSON.stringify(JSON.stringify([long]))}); localStorage.setItem("hearth.current", '"long"'); true`);
  loaded = load();
  await page("Page.reload");
  await loaded;
  await waitFor(`document.getElementById("model").textContent !== "connecting\u2026"`, "the model name after the reload");
  await evaluate(`document.getElementById("input").focus(); true`);
  await page("Input.insertText", { text: message });
  for (const type of ["keyDown", "keyUp"])
    await page("Input.dispatchKeyEvent", { type, key: "Enter", code: "Enter", windowsVirtualKeyCode: 13, text: type === "keyDown" ? "\r" : undefined });
  await waitFor(`${idle} && ${saved}.length === 14`, "the answer to a conversation longer than the context");
  result.overflow = await evaluate(`(() => {
    const c = JSON.parse(localStorage.getItem("hearth.conversations"))[0];
    const note = document.getElementById("left-out");
    return { from: c.from || 0, note: note ? note.textContent : "", error: (document.querySelector(".msg.error") || {}).textContent || "",
             reply: c.messages[13].role === "assistant" && c.messages[13].content.length > 0 };
  })()`);

  // A 360 px phone: nothing wider than the screen, the cluster panel included; the sidebar has a
  // backdrop that closes it.
  await page("Emulation.setDeviceMetricsOverride", { width: 360, height: 740, deviceScaleFactor: 1, mobile: true });
  await sleep(500);  // the sidebar slides out of view (a 0.2 s transition) as the page turns narrow
  await evaluate(`document.getElementById("cluster-toggle").click(); true`);
  await waitFor(`document.querySelectorAll("#cluster td").length > 0`, "the cluster panel at 360 px");
  result.narrow = await evaluate(`(() => {
    const d = document.documentElement, cluster = document.getElementById("cluster"), model = document.getElementById("model");
    return { page_width: Math.max(d.scrollWidth, document.body.scrollWidth), viewport: d.clientWidth,
             cluster_overflow: cluster.scrollWidth - cluster.clientWidth, model_lines_overflow: model.scrollWidth - model.clientWidth };
  })()`);
  if (screenshot) {
    const shot = await page("Page.captureScreenshot", { format: "png" });
    writeFileSync(screenshot, Buffer.from(shot.data, "base64"));
  }
  await evaluate(`document.getElementById("menu").click(); true`);
  result.narrow.backdrop = await evaluate(`getComputedStyle(document.getElementById("backdrop")).display`);
  await evaluate(`document.getElementById("backdrop").click(); true`);
  result.narrow.sidebar_after_backdrop = await evaluate(`document.body.classList.contains("sidebar")`);
  console.log(JSON.stringify(result));
}

main().then(() => finish(0), (e) => fail(e.message));
