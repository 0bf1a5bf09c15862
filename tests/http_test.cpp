// The head's HTTP gateway on real daemons: the OpenAI API answers what `hearth run --chat`
// answers, streams it token by token, refuses bad requests with OpenAI's error JSON without
// disturbing the others, cancels the generation of a client that leaves, and serves the same
// conversation to `hearth chat`, to the official OpenAI client (Node) and to the web page in
// headless Chromium.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "gateway/http_client.h"
#include "gateway/openai_api.h"
#include "gateway/sse.h"
#include "gateway/stop_matcher.h"
#include "tests/cluster_util.h"

using hearth::http::HttpClient;
using hearth::test::Cluster;
using hearth::test::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kKey = "test-key";
const std::string kPrompt = "Once upon a time";

// The head's HTTP address: the second line of its ready file (hearthd writes it with --http).
std::string http_url(const TempDir& dir) {
  std::ifstream f(dir.file("head.ready"));
  std::string control, url;
  std::getline(f, control);
  std::getline(f, url);
  REQUIRE_MESSAGE(url.rfind("http://", 0) == 0, "the head wrote no HTTP address to its ready file");
  return url;
}

json chat_body(const std::string& content, int max_tokens, bool stream = false) {
  return {{"messages", {{{"role", "user"}, {"content", content}}}},
          {"temperature", 0},
          {"max_tokens", max_tokens},
          {"stream", stream}};
}

// Checks OpenAI's error shape and returns its code.
std::string error_code(const hearth::http::HttpResponse& r) {
  const json j = json::parse(r.body, nullptr, false);
  REQUIRE_MESSAGE(!j.is_discarded(), r.body);
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["message"].is_string());
  CHECK(j["error"]["type"].is_string());
  return j["error"]["code"].is_string() ? j["error"]["code"].get<std::string>() : "";
}

struct Streamed {
  int status = 0;
  std::string text, reasoning, finish_reason, error;
  int content_chunks = 0;
  bool first_has_role = false, done = false;
  json usage;
};

Streamed stream_chat(const HttpClient& c, const json& body, const std::string& path = "/v1/chat/completions") {
  Streamed s;
  hearth::http::SseParser sse;
  bool first = true;
  const auto r = c.post_stream(path, body.dump(), [&](std::string_view bytes) {
    sse.push(bytes, [&](const std::string& data) {
      if (data == "[DONE]") {
        s.done = true;
        return;
      }
      const json j = json::parse(data);
      if (j.contains("error")) s.error = j["error"]["message"];
      if (j.contains("usage")) s.usage = j["usage"];
      if (!j.contains("choices") || j["choices"].empty()) return;
      const json& ch = j["choices"][0];
      if (first) s.first_has_role = ch.contains("delta") && ch["delta"].value("role", "") == "assistant";
      first = false;
      if (ch["finish_reason"].is_string()) s.finish_reason = ch["finish_reason"];
      const std::string piece = ch.contains("delta") ? ch["delta"].value("content", "") : ch.value("text", "");
      if (!piece.empty()) s.content_chunks++;
      s.text += piece;
      if (ch.contains("delta")) s.reasoning += ch["delta"].value("reasoning_content", "");
    });
    return true;
  });
  s.status = r.status;
  if (r.status != 200) s.error = r.body;
  return s;
}

// A raw TCP connection to the gateway, for what a well-behaved client never sends.
class RawSocket {
 public:
  explicit RawSocket(const std::string& url) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(url.substr(url.rfind(':') + 1))));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~RawSocket() { close(); }
  void send(const std::string& s) { REQUIRE(::write(fd_, s.data(), s.size()) == static_cast<ssize_t>(s.size())); }
  // Reads until `needle` appears, the peer closes, or the timeout.
  std::string read_until(const std::string& needle, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got_.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      got_.append(buf, static_cast<size_t>(n));
    }
    return got_;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  std::string got_;
};

std::string post_raw(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kKey +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

struct ProgramResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs a program (no shell) with `input` on stdin.
ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input, const TempDir& dir) {
  const std::string in_path = dir.file("stdin.txt"), out_path = dir.file("stdout.txt"), err_path = dir.file("stderr.txt");
  std::ofstream(in_path) << input;
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in = ::open(in_path.c_str(), O_RDONLY), out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644),
              err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    std::vector<std::string> copy = argv;
    std::vector<char*> args;
    for (auto& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ProgramResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream o(out_path), e(err_path);
  r.out.assign(std::istreambuf_iterator<char>(o), {});
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(ss, dir, ':');)
    if (::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  return false;
}

// tests/ in the source tree (this file's folder).
fs::path tests_dir() { return fs::path(__FILE__).parent_path(); }

// Every line is a comment or `name{labels} value`, and every sample follows its family's TYPE.
void check_prometheus(const std::string& text) {
  static const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$)");
  static const std::regex type_line(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  std::stringstream ss(text);
  std::string family;
  int samples = 0;
  for (std::string line; std::getline(ss, line);) {
    CAPTURE(line);
    std::smatch m;
    if (std::regex_match(line, m, type_line)) family = m[1];
    else if (line.rfind("# HELP ", 0) == 0) continue;
    else {
      REQUIRE(std::regex_match(line, m, sample));
      CHECK(m[1].str().rfind(family, 0) == 0);
      samples++;
    }
  }
  CHECK(samples > 10);
}

double metric(const std::string& text, const std::string& name) {
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);)
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

json head_status(const Cluster& c) {
  const auto r = c.cli({"status", "--json"});
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

}  // namespace

TEST_SUITE("http") {
  TEST_CASE("stop strings are cut across tokens, and nothing after them is shown") {
    hearth::http::StopMatcher m({"</s>", "\n\nUser:"});
    std::string shown;
    for (const char* piece : {"Hello", " wor", "ld<", "/", "s>", " more"}) shown += m.push(piece);
    CHECK(shown == "Hello world");
    CHECK(m.stopped());
    CHECK(m.flush().empty());
    hearth::http::StopMatcher n({"STOP"});
    CHECK(n.push("abcST") == "abc");  // "ST" might start STOP: held back
    CHECK(n.push("x") == "STx");
    CHECK(n.flush().empty());
    CHECK(n.push("end S") == "end ");
    CHECK(n.flush() == "S");
  }

  TEST_CASE("OpenAI request parsing: fields, defaults and errors") {
    const auto r = hearth::http::parse_chat_request(
        R"({"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
          "temperature":0.5,"top_p":0.9,"max_tokens":7,"stop":"x","seed":3,"presence_penalty":1,"stream":true,
          "stream_options":{"include_usage":true}})",
        99);
    CHECK(r.messages.size() == 2);
    CHECK(r.messages[0].role == "system");
    CHECK(r.messages[1].content == "hi");
    CHECK(r.sampling.temperature == doctest::Approx(0.5));
    CHECK(r.sampling.seed == 3);
    CHECK(r.max_tokens == 7);
    CHECK(r.stop == std::vector<std::string>{"x"});
    CHECK(r.include_usage);
    CHECK(hearth::http::parse_chat_request(R"({"messages":[{"role":"user","content":"a"}]})", 99).sampling.seed == 99);
    // How much a reasoning model thinks.
    const auto plain = hearth::http::parse_chat_request(R"({"messages":[{"role":"user","content":"a"}]})", 1);
    CHECK_FALSE(plain.thinking.has_value());
    CHECK(plain.reasoning_effort.empty());
    CHECK(hearth::http::parse_chat_request(R"({"messages":[{"role":"user","content":"a"}],"reasoning_effort":"high"})", 1)
              .reasoning_effort == "high");
    const auto thinking = [](const char* body) { return hearth::http::parse_chat_request(body, 1).thinking; };
    CHECK(thinking(R"({"messages":[{"role":"user","content":"a"}],"reasoning_effort":"none"})") == false);
    CHECK(thinking(R"({"messages":[{"role":"user","content":"a"}],"reasoning_effort":"low"})") == true);
    CHECK(thinking(R"({"messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"enable_thinking":false}})") == false);
    CHECK(thinking(R"({"messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"enable_thinking":true}})") == true);
    // The explicit switch wins over the effort.
    CHECK(thinking(R"({"messages":[{"role":"user","content":"a"}],"reasoning_effort":"high",
                       "chat_template_kwargs":{"enable_thinking":false}})") == false);
    for (const char* bad :
         {"{", "[]", R"({"messages":[]})", R"({"messages":[{"role":"tool","content":"x"}]})",
          R"({"messages":[{"role":"user","content":"a"}],"temperature":"hot"})",
          R"({"messages":[{"role":"user","content":"a"}],"max_tokens":0})",
          R"({"messages":[{"role":"user","content":"a"}],"stop":[1]})", R"({"messages":[{"role":"user","content":"a"}],"n":2})",
          R"({"messages":[{"role":"user","content":"a"}],"reasoning_effort":"max"})",
          R"({"messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"enable_thinking":"no"}})",
          R"({"messages":[{"role":"user","content":"a"}],"chat_template_kwargs":[]})"}) {
      CAPTURE(bad);
      CHECK_THROWS_AS(hearth::http::parse_chat_request(bad, 1), hearth::http::ApiError);
    }
    // Found by fuzzing: an overflowing number was a 500; a deeply nested body took ~70 bytes of the
    // head's memory per level before it was refused.
    for (const std::string& bad :
         std::vector<std::string>{R"({"messages":[{"role":"user","content":"a"}],"temperature":1e999})", std::string(100000, '['),
                                  R"({"messages":)" + std::string(65, '[') + std::string(65, ']') + "}"}) {
      try {
        hearth::http::parse_chat_request(bad, 1);
        FAIL("accepted");
      } catch (const hearth::http::ApiError& e) {
        CHECK(e.status() == 400);
      }
    }
    try {
      hearth::http::parse_chat_request(R"({"messages":[{"role":"user","content":"a"}],"top_p":3})", 1);
    } catch (const hearth::http::ApiError& e) {
      CHECK(e.status() == 400);
      CHECK(e.param() == "top_p");
      CHECK(json::parse(e.body())["error"]["type"] == "invalid_request_error");
    }
  }

  TEST_CASE("the OpenAI API on a 2-daemon cluster: same text as `hearth run --chat`, streamed, errors, clients") {
    TempDir dir;
    auto shared = hearth::test::shared_file("models/stories260K/stories260K.gguf");
    std::string model;
    if (shared) {
      model = *shared;
    } else {
      MESSAGE("using a random-weight model instead of stories260K: texts are compared between HTTP paths only");
      model = hearth::test::make_model(dir, "m.gguf", {});
    }
    Cluster c(dir);
    c.start("head", {"--http", "127.0.0.1:0", "--api-key", kKey});
    c.start("a");
    const std::string url = http_url(dir);
    const HttpClient api(url, kKey);

    // Before any launch: not ready, and said so in OpenAI's words.
    CHECK(api.get("/health").status == 503);
    auto r = api.post("/v1/chat/completions", chat_body(kPrompt, 5).dump());
    CHECK(r.status == 503);
    CHECK(error_code(r) == "model_not_loaded");
    CHECK(json::parse(api.get("/v1/models").body)["data"].empty());

    const auto l = c.cli({"launch", "--model", model, "--split", shared ? "head:2,a:3" : "head:2,a:2"});
    REQUIRE_MESSAGE(l.exit_code == 0, l.err);
    const std::string model_id = fs::path(model).stem().string();
    CHECK(api.get("/health").status == 200);
    const json models = json::parse(api.get("/v1/models").body);
    REQUIRE(models["data"].size() == 1);
    CHECK(models["data"][0]["id"] == model_id);

    // Greedy: what one device computes with `hearth run --chat`.
    std::string expected;
    if (shared) {
      const auto run = hearth::test::run_cli({"run", "--model", model, "--chat", "--prompt", kPrompt, "-n", "30", "--temp", "0"});
      REQUIRE(run.exit_code == 0);
      expected = run.out.substr(0, run.out.size() - 1);  // its final newline
    }
    json body = chat_body(kPrompt, 30);
    body["model"] = model_id;
    const auto t0 = std::chrono::steady_clock::now();
    r = api.post("/v1/chat/completions", body.dump());
    const double whole_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const json whole = json::parse(r.body);
    const std::string text = whole["choices"][0]["message"]["content"];
    if (shared) CHECK(text == expected);
    else expected = text;
    CHECK(whole["object"] == "chat.completion");
    CHECK(whole["model"] == model_id);
    CHECK(whole["choices"][0]["finish_reason"] == "length");
    CHECK(whole["usage"]["completion_tokens"] == 30);
    CHECK(whole["usage"]["prompt_tokens"].get<int>() > 0);
    CHECK(whole["usage"]["total_tokens"] == whole["usage"]["prompt_tokens"].get<int>() + 30);
    MESSAGE("30 tokens through HTTP in " << whole_ms << " ms; time to first token at the gateway "
                                         << whole["hearth"]["http_ttft_ms"].get<double>() << " ms, at the head "
                                         << whole["hearth"]["ttft_ms"].get<double>() << " ms");

    // Streamed: the same text, one chunk per token, then the finish reason and [DONE].
    json sbody = chat_body(kPrompt, 30, true);
    sbody["stream_options"] = {{"include_usage", true}};
    const Streamed s = stream_chat(api, sbody);
    CHECK(s.status == 200);
    CHECK(s.text == expected);
    CHECK(s.first_has_role);
    CHECK(s.finish_reason == "length");
    CHECK(s.done);
    CHECK(s.usage["completion_tokens"] == 30);
    CHECK(s.content_chunks >= 25);  // one per token, less the few that hold part of a character
    CHECK(s.content_chunks <= 30);

    // A stop string cuts the text there and cancels the rest (stories260K's text is ASCII).
    if (shared) {
      const std::string stop_word = expected.substr(expected.size() / 2, 4);
      json stop_body = chat_body(kPrompt, 30);
      stop_body["stop"] = {stop_word, "never appears"};
      r = api.post("/v1/chat/completions", stop_body.dump());
      REQUIRE(r.status == 200);
      const json stopped = json::parse(r.body);
      CHECK(stopped["choices"][0]["message"]["content"] == expected.substr(0, expected.find(stop_word)));
      CHECK(stopped["choices"][0]["finish_reason"] == "stop");
      stop_body["stream"] = true;
      const Streamed ss = stream_chat(api, stop_body);
      CHECK(ss.text == expected.substr(0, expected.find(stop_word)));
      CHECK(ss.finish_reason == "stop");
    }

    // Text completions continue a plain prompt, like `hearth generate`.
    r = api.post("/v1/completions", json({{"prompt", kPrompt}, {"max_tokens", 20}, {"temperature", 0}}).dump());
    REQUIRE(r.status == 200);
    const auto gen = c.cli({"generate", "--prompt", kPrompt, "-n", "20", "--temp", "0"});
    REQUIRE(gen.exit_code == 0);
    if (shared) CHECK(json::parse(r.body)["choices"][0]["text"].get<std::string>() + "\n" == gen.out);
    CHECK(stream_chat(api, {{"prompt", kPrompt}, {"max_tokens", 20}, {"temperature", 0}, {"stream", true}}, "/v1/completions")
              .text == json::parse(r.body)["choices"][0]["text"]);

    // Errors: OpenAI's JSON with the right status, and the server goes on serving.
    CHECK(HttpClient(url, "").post("/v1/chat/completions", body.dump()).status == 401);
    CHECK(error_code(HttpClient(url, "wrong").post("/v1/chat/completions", body.dump())) == "invalid_api_key");
    CHECK(HttpClient(url, "").get("/metrics").status == 401);
    r = api.post("/v1/chat/completions", "{\"messages\": [");
    CHECK(r.status == 400);
    CHECK(error_code(r) == "invalid_json");
    r = api.post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"temperature":"hot"})");
    CHECK(r.status == 400);
    CHECK(json::parse(r.body)["error"]["param"] == "temperature");
    CHECK(api.post("/v1/chat/completions", R"({"prompt":"no messages"})").status == 400);
    r = api.get("/v1/nothing-here");
    CHECK(r.status == 404);
    CHECK(error_code(r) == "not_found");
    json unknown = body;
    unknown["model"] = "gpt-4o";
    r = api.post("/v1/chat/completions", unknown.dump());
    CHECK(r.status == 404);
    CHECK(error_code(r) == "model_not_found");
    CHECK(api.get("/v1/chat/completions").status == 405);
    std::string long_text;
    for (int i = 0; i < 3000; ++i) long_text += "word ";
    r = api.post("/v1/chat/completions", chat_body(long_text, 5).dump());
    CHECK(r.status == 400);  // as OpenAI answers it
    CHECK(error_code(r) == "context_length_exceeded");
    {
      RawSocket raw(url);
      raw.send("THIS IS NOT HTTP\r\n\r\n");
      CHECK(raw.read_until("\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
    }
    {
      RawSocket raw(url);  // a body larger than the limit
      raw.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n");
      CHECK(raw.read_until("\r\n\r\n").rfind("HTTP/1.1 413", 0) == 0);
    }

    // Many conversations at once, more than the head's 4 streams: the head batches them, the
    // gateway queues the rest, each gets its own answer.
    std::vector<std::string> answers(7);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < answers.size(); ++i)
      threads.emplace_back([&, i] {
        try {
          if (i % 2) {
            const Streamed one = stream_chat(api, chat_body(kPrompt, 30, true));
            answers[i] = one.error.empty() ? one.text : one.error;
          } else {
            const auto one = api.post("/v1/chat/completions", chat_body(kPrompt, 30).dump());
            answers[i] =
                one.status == 200 ? json::parse(one.body)["choices"][0]["message"]["content"].get<std::string>() : one.body;
          }
        } catch (const std::exception& e) {
          answers[i] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& a : answers) CHECK(a == expected);

    // Metrics and the page's status endpoint.
    const auto m = api.get("/metrics");
    REQUIRE(m.status == 200);
    CHECK(m.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
    check_prometheus(m.body);
    CHECK(metric(m.body, "hearth_tokens_generated_total") >= 30 * 9);
    CHECK(metric(m.body, "hearth_model_loaded{model=\"" +
                             json::parse(api.get("/v1/models").body)["data"][0]["hearth"]["name"].get<std::string>() + "\"}") ==
          1);
    CHECK(metric(m.body, "hearth_http_generations_active") == 0);
    CHECK(metric(m.body, "hearth_http_time_to_first_token_seconds_count") >= 10);
    const json st = json::parse(api.get("/v1/hearth/status").body);
    CHECK(st["devices"].size() == 2);
    CHECK(st["status"]["plan"]["stages"].size() == 2);
    CHECK(api.get("/").body.find("<title>hearth</title>") != std::string::npos);

    // `hearth chat`, scripted: stdin is the prompt, stdout the answer.
    const auto chat = run_program({HEARTH_CLI, "chat", "--url", url, "--api-key", kKey, "--temp", "0", "--max-tokens", "30"},
                                  kPrompt + "\n", dir);
    CAPTURE(chat.err);
    CHECK(chat.exit_code == 0);
    CHECK(chat.out == expected + "\n");
    CHECK(chat.err.find("tok/s") != std::string::npos);
    const auto refused = run_program({HEARTH_CLI, "chat", "--url", url, "--api-key", "wrong"}, kPrompt, dir);
    CHECK(refused.exit_code != 0);
    CHECK(refused.err.find("--api-key") != std::string::npos);

    // The official OpenAI client (Node).
    const fs::path openai_dir = tests_dir() / "openai";
    if (!on_path("node")) {
      MESSAGE("SKIPPED the OpenAI client check: node is not installed (scripts/test.sh installs it)");
    } else if (!fs::exists(openai_dir / "node_modules" / "openai")) {
      MESSAGE("SKIPPED the OpenAI client check: run `npm ci --prefix tests/openai` first (scripts/test.sh does)");
    } else {
      const auto node = run_program({"node", (openai_dir / "chat.mjs").string(), url, kKey, kPrompt}, "", dir);
      CAPTURE(node.err);
      REQUIRE(node.exit_code == 0);
      const json o = json::parse(node.out);
      CHECK(o["models"] == json::array({model_id}));
      CHECK(o["text"] == expected);
      CHECK(o["streamed"] == expected);
      CHECK(o["finish_reason"] == "length");
      CHECK(o["stream_finish_reason"] == "length");
      CHECK(o["usage"]["completion_tokens"] == 30);
      CHECK(o["stream_usage"]["completion_tokens"] == 30);
      CHECK(o["wrong_key"]["status"] == 401);
      CHECK(o["wrong_key"]["class"] == "AuthenticationError");
      CHECK(o["unknown_model"]["status"] == 404);
      CHECK(o["bad_temperature"]["status"] == 400);
    }

    // The web page in headless Chromium: type, Enter, a streamed reply; the cluster panel.
    if (!on_path("node") || !fs::exists("/usr/bin/chromium")) {
      MESSAGE("SKIPPED the web page check: it needs node and Debian's chromium (scripts/test.sh installs them)");
    } else {
      const auto web =
          run_program({"node", (tests_dir() / "web" / "web_chat.mjs").string(), url + "/", kPrompt, "--api-key", kKey}, "", dir);
      CAPTURE(web.err);
      REQUIRE(web.exit_code == 0);
      const json w = json::parse(web.out);
      CHECK(w["error"] == "");
      CHECK(w["reply"] == expected);
      CHECK(w["updates"].get<int>() >= 5);  // the text grew chunk by chunk
      CHECK(w["saved_messages"] == 2);      // the conversation is in localStorage
      CHECK(w["cluster_rows"] == 2);        // head and a
      CHECK(w["model_at_start"] == model_id);
      // Regenerate and edit-and-resend (greedy: the same reply each time).
      CHECK(w["regenerated"] == expected);
      CHECK(w["edit_input"] == kPrompt);
      CHECK(w["edit_saved"] == 0);
      CHECK(w["edited_reply"] == expected);
      // Markdown renders; the model's HTML stays text.
      const json& md = w["markdown"];
      CAPTURE(md.dump());
      CHECK(md["pwned"] == 0);
      CHECK(md["elements"] == 0);
      CHECK(md["visible"] == true);
      CHECK(md["code"] == "console.log(\"<b>hi</b>\");");
      CHECK(md["copy"] == true);
      CHECK(md["items"] == 7);  // 2 + 2 + outer and its 2 inner ones
      CHECK(md["nested"] == 2);
      CHECK(md["quote"] == "quoted words\nand more");
      REQUIRE(md["links"].size() == 1);
      CHECK(md["links"][0] == "https://example.org/docs?a=1 the docs noopener noreferrer");
      CHECK(md["text"].get<std::string>().find("[not a link](javascript:window.__pwned=5)") != std::string::npos);
      CHECK(md["cells"] == 2);
      CHECK(md["strong"] == 1);
      CHECK(md["em"] == 4);  // *emphasis*, _more_, _c_, *words*
      CHECK(md["inline_code"] == "a<b>");
      CHECK(md["text"].get<std::string>().find("<script>window.__pwned = 1</script>") != std::string::npos);
      CHECK(md["text"].get<std::string>().find("<img src=x onerror=") != std::string::npos);
      CHECK(md["user"] == "<b>not bold</b>");
      // A conversation longer than the context: its oldest exchanges are left out, and the page says so.
      const json& overflow = w["overflow"];
      CAPTURE(overflow.dump());
      CHECK(overflow["from"].get<int>() >= 2);
      CHECK(overflow["from"].get<int>() % 2 == 0);  // whole exchanges
      CHECK(overflow["note"].get<std::string>().find("no longer fit the model's context") != std::string::npos);
      CHECK(overflow["error"] == "");
      CHECK(overflow["reply"] == true);
      // 360 px: no horizontal scroll, the cluster table and the model name fit; a backdrop closes the sidebar.
      const json& narrow = w["narrow"];
      CAPTURE(narrow.dump());
      CHECK(narrow["page_width"].get<int>() <= 360);
      CHECK(narrow["cluster_overflow"].get<int>() <= 0);
      CHECK(narrow["model_lines_overflow"].get<int>() <= 0);
      CHECK(narrow["backdrop"] == "block");
      CHECK(narrow["sidebar_after_backdrop"] == false);
    }
  }

  TEST_CASE("a reasoning model through the head and the gateway: reasoning_content apart, thinking switched off on request") {
    // A Qwen 3.5-style chat model: ChatML control tokens, <think> markers, and a template that opens
    // the block unless enable_thinking is false. Its random weights (seed 1) do not say </think> in
    // 12 greedy tokens, so the whole reply is reasoning.
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.shape = *hearth::runtime::random_model_preset("tiny");
    o.control_tokens = {"<|im_start|>", "<|im_end|>", "<think>", "</think>"};
    o.chat_template =
        "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
        "{%- if '</think>' in message.content %}{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
        "{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}";
    const std::string model = hearth::test::make_model(dir, "thinker.gguf", o);
    Cluster c(dir);
    c.start("head", {"--http", "127.0.0.1:0"});
    c.start("a");
    REQUIRE(c.cli({"launch", "--model", model, "--split", "head:2,a:2"}).exit_code == 0);
    const HttpClient api(http_url(dir), "");

    const auto r = api.post("/v1/chat/completions", chat_body("2+2?", 12).dump());
    REQUIRE(r.status == 200);
    const json j = json::parse(r.body);
    CAPTURE(r.body);
    CHECK(j["hearth"]["chat_template"] == "chatml-think");
    const std::string reasoning = j["choices"][0]["message"].value("reasoning_content", "");
    CHECK_FALSE(reasoning.empty());
    CHECK(j["choices"][0]["message"]["content"] == "");
    CHECK(j["usage"]["completion_tokens_details"]["reasoning_tokens"] == j["usage"]["completion_tokens"]);
    // Streamed: the same reasoning in deltas, no answer.
    const Streamed s = stream_chat(api, chat_body("2+2?", 12, true));
    CHECK(s.done);
    CHECK(s.first_has_role);
    CHECK(s.reasoning == reasoning);
    CHECK(s.text.empty());
    // Thinking off: the prompt closes the block, and the reply, another one, is all answer.
    json off = chat_body("2+2?", 12);
    off["chat_template_kwargs"] = {{"enable_thinking", false}};
    const auto r_off = api.post("/v1/chat/completions", off.dump());
    REQUIRE(r_off.status == 200);
    const json j_off = json::parse(r_off.body);
    CAPTURE(r_off.body);
    CHECK_FALSE(j_off["choices"][0]["message"].contains("reasoning_content"));
    CHECK_FALSE(j_off["choices"][0]["message"]["content"].get<std::string>().empty());
    CHECK(j_off["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0);
    CHECK(j_off["usage"]["prompt_tokens"].get<int>() > j["usage"]["prompt_tokens"].get<int>());
  }

  TEST_CASE("a client that leaves cancels its generation, and bad requests do not disturb a running one") {
    TempDir dir;
    hearth::runtime::MakeModelOptions o;
    o.type = hearth::runtime::TensorType::Q8_0;
    o.shape = {.n_vocab = 512, .n_embd = 512, .n_layer = 6, .n_head = 8, .n_head_kv = 4, .n_ff = 1536, .n_ctx = 4096};
    const std::string model = hearth::test::make_model(dir, "slow.gguf", o);
    Cluster c(dir);
    c.start("head", {"--http", "127.0.0.1:0", "--api-key", kKey});
    c.start("a");
    REQUIRE(c.cli({"launch", "--model", model, "--split", "head:3,a:3", "--ctx", "4096"}).exit_code == 0);
    const std::string url = http_url(dir);
    const HttpClient api(url, kKey);
    const auto active = [&] { return head_status(c)["generation"]["active"].get<int>(); };
    const auto wait_active = [&](int n) {
      for (int i = 0; i < 100 && active() != n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(30));
      return active();
    };

    // A long streamed generation...
    RawSocket streaming(url);
    streaming.send(post_raw("/v1/chat/completions", chat_body("tell me a long story", 4000, true).dump()));
    REQUIRE(streaming.read_until("data: ").find("200 OK") != std::string::npos);
    // ...while others send nonsense, and one asks for too much.
    for (const std::string& bad :
         {std::string("GARBAGE\r\n\r\n"), post_raw("/v1/chat/completions", "{oops"), post_raw("/v1/completions", "[]")}) {
      RawSocket raw(url);
      raw.send(bad);
      CHECK(raw.read_until("\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
    }
    std::string long_text;
    for (int i = 0; i < 5000; ++i) long_text += "word ";
    const auto too_long = api.post("/v1/chat/completions", chat_body(long_text, 5).dump());
    CHECK(too_long.status == 400);
    CHECK(json::parse(too_long.body)["error"]["code"] == "context_length_exceeded");
    CHECK(json::parse(too_long.body)["error"]["message"].get<std::string>().find("leave out at least") != std::string::npos);
    // A short one still gets its answer meanwhile.
    const auto quick = api.post("/v1/chat/completions", chat_body("hi", 3).dump());
    CHECK(quick.status == 200);
    CHECK(json::parse(quick.body)["usage"]["completion_tokens"].get<int>() <= 3);
    // The long stream is still going.
    const size_t before = streaming.read_until("never", std::chrono::milliseconds(100)).size();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(streaming.read_until("never", std::chrono::milliseconds(300)).size() > before);
    CHECK(active() == 1);

    // The client leaves: the head ends the generation and frees its cache at once.
    const auto t0 = std::chrono::steady_clock::now();
    streaming.close();
    CHECK(wait_active(0) == 0);
    MESSAGE("generation cancelled " << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()
                                    << " ms after the client closed its connection");
    const auto tokens = head_status(c)["generation"]["tokens_generated"].get<int>();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(head_status(c)["generation"]["tokens_generated"].get<int>() == tokens);

    // The same for a client waiting for a whole (not streamed) answer: it has received nothing yet.
    {
      RawSocket waiting(url);
      waiting.send(post_raw("/v1/chat/completions", chat_body("tell me a long story", 4000).dump()));
      CHECK(wait_active(1) == 1);
    }
    CHECK(wait_active(0) == 0);
    const auto m = api.get("/metrics").body;
    CHECK(metric(m, "hearth_http_client_disconnects_total") == 2);
    CHECK(metric(m, "hearth_http_generations_active") == 0);
  }

  TEST_CASE("hearth chat says the answer was cut when the stream ends without its end marker (the head stopped)") {
    TempDir dir;
    // A head that dies mid-answer: it sends the status line and one token, then the connection
    // closes, with no [DONE] and no end of the chunked body.
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener, 4) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    std::thread dying_head([listener] {
      for (const bool clean_close : {false, true}) {
        const int fd = ::accept(listener, nullptr, nullptr);
        if (fd < 0) return;
        char buf[4096];
        std::string request;
        while (request.find("\r\n\r\n") == std::string::npos) {  // headers; the body is not needed
          const ssize_t n = ::read(fd, buf, sizeof buf);
          if (n <= 0) break;
          request.append(buf, static_cast<size_t>(n));
        }
        const std::string event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"}}]}\n\n";
        char size[16];
        std::snprintf(size, sizeof size, "%zx", event.size());
        std::string response =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(size) +
            "\r\n" + event + "\r\n";
        if (clean_close) response += "0\r\n\r\n";  // a body that ends properly, still without [DONE]
        (void)!::write(fd, response.data(), response.size());
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        ::close(fd);
      }
    });
    for (int i = 0; i < 2; ++i) {
      const auto chat = run_program({HEARTH_CLI, "chat", "--url", url}, "hello\n", dir);
      CAPTURE(chat.err);
      CHECK(chat.exit_code != 0);
      CHECK(chat.out.find("Once") != std::string::npos);  // what came is shown
      CHECK(chat.err.find("lost before the answer ended") != std::string::npos);
    }
    dying_head.join();
    ::close(listener);
  }

  TEST_CASE("the model library: listed with what each takes, launched by name, a library model not loaded is a 409") {
    TempDir dir;
    const fs::path lib = dir.file("lib");
    fs::create_directories(lib);
    for (const char* name : {"beta.gguf", "alpha.gguf"}) fs::rename(hearth::test::make_model(dir, name, {}), lib / name);
    {  // a download cut short: listed, with why it cannot be launched
      std::ofstream broken(lib / "broken.gguf", std::ios::binary);
      broken << "GGUF\x03";
    }
    std::ofstream(lib / "notes.txt") << "not a model";
    Cluster c(dir);
    c.start("head", {"--http", "127.0.0.1:0", "--models", lib.string()});
    c.start("a");
    const HttpClient api(http_url(dir), "");

    auto r = c.cli({"models", "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    json listed = json::parse(r.out);
    REQUIRE(listed["models"].size() == 3);
    CHECK(listed["models"][0]["id"] == "alpha");
    CHECK(listed["models"][1]["id"] == "beta");
    const json& alpha = listed["models"][0];
    CHECK(alpha["fits"] == true);
    CHECK(alpha["loaded"] == false);
    CHECK(alpha["arch"] == "llama");
    CHECK(alpha["weight_type"] == "f32");
    CHECK(alpha["predicted_tokens_per_s"].get<double>() > 0);
    CHECK(!alpha["devices"].empty());
    const json& broken = listed["models"][2];
    CHECK(broken["fits"] == false);
    CHECK(broken["why"].get<std::string>().find("cannot be read") != std::string::npos);

    // Nothing loaded: every model listed, none marked; naming one is a conflict, not "unknown".
    json models = json::parse(api.get("/v1/models").body);
    REQUIRE(models["data"].size() == 3);
    CHECK(models["data"][0]["hearth"]["loaded"] == false);
    json body = chat_body("hello", 4);
    body["model"] = "alpha";
    auto h = api.post("/v1/chat/completions", body.dump());
    CHECK(h.status == 409);
    CHECK(error_code(h) == "model_not_loaded");

    // Launched by its name in the library.
    r = c.cli({"launch", "--model", "alpha", "--split", "head:2,a:2"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    models = json::parse(api.get("/v1/models").body);
    REQUIRE(models["data"].size() == 3);
    CHECK(models["data"][0]["hearth"]["loaded"] == true);
    CHECK(models["data"][0]["hearth"]["stages"].size() == 2);
    CHECK(models["data"][1]["hearth"]["loaded"] == false);
    CHECK(api.post("/v1/chat/completions", body.dump()).status == 200);
    body["model"] = "beta";
    h = api.post("/v1/chat/completions", body.dump());
    CHECK(h.status == 409);
    CHECK(json::parse(h.body)["error"]["message"].get<std::string>().find("this head serves 'alpha'") != std::string::npos);
    body["model"] = "gpt-4o";
    h = api.post("/v1/chat/completions", body.dump());
    CHECK(h.status == 404);
    CHECK(error_code(h) == "model_not_found");
    h = api.get("/v1/models/beta");
    CHECK(h.status == 200);
    CHECK(json::parse(h.body)["hearth"]["fits"] == true);
    CHECK(api.get("/v1/models/nothing").status == 404);

    r = c.cli({"models"});
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("alpha") != std::string::npos);
    CHECK(r.out.find("yes") != std::string::npos);
    CHECK(r.out.find("fits on") != std::string::npos);
    CHECK(c.cli({"launch", "--model", "gamma"}).err.find("`hearth models` lists them") != std::string::npos);

    // The page's model picker: the library with what each costs, a load with its progress.
    // The launch endpoint takes only the library's names.
    h = api.post("/v1/hearth/launch", R"({"model":"/etc/passwd"})");
    CHECK(h.status == 404);
    CHECK(api.post("/v1/hearth/launch", "not json").status == 400);
    // Its options are checked before anything is planned: each a 400 naming the field.
    for (const char* bad : {R"({"model":"beta","kv_type":"q4"})", R"({"model":"beta","kv_type":16})", R"({"model":"beta","ctx":5})",
                            R"({"model":"beta","wire_type":"q4_0"})", R"({"model":"beta","wire_type":2})",
                            R"({"model":"beta","ctx":"big"})", R"({"model":"beta","streams":1000})", R"({"model":"beta","streams":1.5})",
                            R"({"model":"beta","draft":"oracle:/etc/passwd"})", R"({"model":"beta","draft":1})"}) {
      CAPTURE(bad);
      h = api.post("/v1/hearth/launch", bad);
      CHECK(h.status == 400);
      CHECK(json::parse(h.body)["error"]["param"] != "model");
    }
    if (!on_path("node") || !fs::exists("/usr/bin/chromium")) {
      MESSAGE("SKIPPED the model picker check: it needs node and Debian's chromium (scripts/test.sh installs them)");
      return;
    }
    const auto web = run_program(
        {"node", (tests_dir() / "web" / "web_chat.mjs").string(), http_url(dir) + "/", "-", "--pick-model", "beta", "--launch-ctx",
         "2048", "--launch-kv", "f32", "--launch-streams", "2", "--launch-wire", "f16", "--launch-draft", "ngram"},
        "", dir);
    CAPTURE(web.err);
    REQUIRE(web.exit_code == 0);
    const json w = json::parse(web.out);
    CAPTURE(w.dump());
    CHECK(w["model_at_start"].get<std::string>().rfind("alpha", 0) == 0);
    REQUIRE(w["listed"].size() == 3);
    CHECK(w["listed"][0].get<std::string>().find("alpha (loaded)") != std::string::npos);
    CHECK(w["listed"][1].get<std::string>().find("tok/s") != std::string::npos);  // what loading beta costs
    CHECK(w["listed"][2].get<std::string>().find("cannot be read") != std::string::npos);
    CHECK(w["progress"] == "beta is loaded.");
    CHECK(w["model_after"].get<std::string>().rfind("beta", 0) == 0);
    CHECK(w["picker_horizontal_scroll"] == false);
    REQUIRE(w["launch_bodies"].size() == 1);
    CHECK(w["launch_bodies"][0]["wire_type"] == "f16");
    CHECK(w["launch_bodies"][0]["draft"] == "ngram");
    CHECK(json::parse(api.get("/v1/models/beta").body)["hearth"]["loaded"] == true);
    // Loaded as chosen on the page, not with the defaults (ctx 512 here, f16, 4 conversations).
    const json plan = json::parse(api.get("/v1/hearth/status").body)["status"]["plan"];
    CAPTURE(plan.dump());
    CHECK(plan["n_ctx"] == 2048);
    CHECK(plan["kv_type"] == "f32");
    CHECK(plan["max_sequences"] == 2);
    for (const auto& stage : plan["stages"])  // hops between devices, if the planner made any, carry f16
      if (!stage["has_output"].get<bool>()) CHECK(stage["wire_type"] == "f16");
    CHECK(json::parse(api.get("/v1/hearth/status").body)["status"]["generation"]["speculation"]["draft"] == "ngram");
  }

  TEST_CASE("--auto-load: a request naming a model of the library loads it, and requests meanwhile wait for the same launch") {
    TempDir dir;
    const fs::path lib = dir.file("lib");
    fs::create_directories(lib);
    for (const char* name : {"alpha.gguf", "beta.gguf"}) fs::rename(hearth::test::make_model(dir, name, {}), lib / name);
    Cluster c(dir);
    c.start("head", {"--http", "127.0.0.1:0", "--models", lib.string(), "--auto-load"});
    c.start("a");
    const HttpClient api(http_url(dir), "");
    json body = chat_body("hello", 4);
    for (const char* id : {"alpha", "beta"}) {
      CAPTURE(id);
      body["model"] = id;
      // Two at once: one launch, both answered by the model it loaded.
      std::vector<hearth::http::HttpResponse> replies(2);
      std::thread other([&] { replies[1] = api.post("/v1/chat/completions", body.dump()); });
      replies[0] = api.post("/v1/chat/completions", body.dump());
      other.join();
      for (const auto& r : replies) {
        REQUIRE_MESSAGE(r.status == 200, r.body);
        CHECK(json::parse(r.body)["model"] == id);
      }
      CHECK(json::parse(api.get(std::string("/v1/models/") + id).body)["hearth"]["loaded"] == true);
    }
    body["model"] = "gpt-4o";
    CHECK(api.post("/v1/chat/completions", body.dump()).status == 404);
    const auto refused = run_program({HEARTH_DAEMON, "--auto-load", "--data-dir", dir.file("solo")}, "", dir);
    CHECK(refused.exit_code != 0);
    CHECK(refused.err.find("--auto-load needs --http") != std::string::npos);
  }

}  // TEST_SUITE
