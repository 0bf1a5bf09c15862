// The official OpenAI client against hearth's head: lists the models, chats without and with
// streaming, and checks that errors arrive as the client's typed errors. Prints one JSON line
// for tests/http_test.cpp to check.
//
//   node tests/openai/chat.mjs http://HOST:PORT API_KEY "user message"
import OpenAI from "openai";

const [url, apiKey, message] = process.argv.slice(2);
if (!url || !message) {
  console.error("usage: chat.mjs http://HOST:PORT API_KEY MESSAGE");
  process.exit(2);
}
const client = new OpenAI({ baseURL: url + "/v1", apiKey: apiKey || "none", maxRetries: 0, timeout: 30000 });
const out = {};

const models = await client.models.list();
out.models = models.data.map((m) => m.id);
const model = out.models[0];
const request = { model, messages: [{ role: "user", content: message }], temperature: 0, max_tokens: 30 };

const whole = await client.chat.completions.create(request);
out.text = whole.choices[0].message.content;
out.finish_reason = whole.choices[0].finish_reason;
out.usage = whole.usage;

const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
out.chunks = 0;
out.streamed = "";
for await (const chunk of stream) {
  if (chunk.usage) out.stream_usage = chunk.usage;
  if (!chunk.choices.length) continue;
  out.chunks++;
  out.streamed += chunk.choices[0].delta.content ?? "";
  if (chunk.choices[0].finish_reason) out.stream_finish_reason = chunk.choices[0].finish_reason;
}

for (const [name, make] of [
  ["wrong_key", () => new OpenAI({ baseURL: url + "/v1", apiKey: "wrong", maxRetries: 0 }).chat.completions.create(request)],
  ["unknown_model", () => client.chat.completions.create({ ...request, model: "no-such-model" })],
  ["bad_temperature", () => client.chat.completions.create({ ...request, temperature: 7 })],
]) {
  try {
    await make();
    out[name] = "no error";
  } catch (e) {
    out[name] = { status: e.status, class: e.constructor.name, code: e.code ?? null };
  }
}
console.log(JSON.stringify(out));
