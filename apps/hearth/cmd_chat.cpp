// `hearth chat`: a terminal chat with the cluster over the head's HTTP API (the OpenAI chat
// completions endpoint every other client uses), streamed token by token.
//
// Interactive on a terminal: line editing and history (libedit), a line ending in '\' goes on
// on the next line, /reset, /system TEXT, /exit, and Ctrl-C stops a reply. When stdin is not a
// terminal, the whole of stdin is one prompt: it is answered once and the command exits.
#include <editline/readline.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "apps/hearth/commands.h"
#include "apps/hearth/reply_printer.h"
#include "gateway/http_client.h"
#include "gateway/sse.h"

namespace hearth::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A delta's text field, or "" when it is absent or not text.
std::string text_field(const json& delta, const char* name) {
  const auto it = delta.find(name);
  return it != delta.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A signal handler can reach only static storage: this is the one flag Ctrl-C sets while a
// reply streams in.
volatile std::sig_atomic_t g_interrupted = 0;

void on_sigint(int) { g_interrupted = 1; }

// SIGINT stops the reply (the blocking read returns EINTR) instead of the program, while it lives.
class InterruptScope {
 public:
  InterruptScope() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the read must return
    sigaction(SIGINT, &sa, &old_);
  }
  ~InterruptScope() { sigaction(SIGINT, &old_, nullptr); }
  bool interrupted() const { return g_interrupted != 0; }

 private:
  struct sigaction old_ {};
};

struct ChatArgs {
  std::string url;
  std::string api_key;
  std::string system;
  std::optional<float> temperature;
  std::optional<int> max_tokens;
  std::optional<uint64_t> seed;
  bool hide_reasoning = false;
  std::string reasoning_effort;  // "" = the model's default
};

struct Reply {
  std::string text;
  std::string finish_reason;
  bool stopped = false;  // by Ctrl-C
  uint32_t tokens = 0;
  double first_s = 0, total_s = 0, decode_tok_s = 0;
};

// The conversation no longer fits the model's context (the API's context_length_exceeded).
struct ContextFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Replies are cut here unless --max-tokens says otherwise, so that one reply cannot fill the
// context and leave the conversation nowhere to go.
constexpr int kDefaultReplyTokens = 512;

std::string error_code(const http::HttpResponse& r) {
  const json j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("code") && j["error"]["code"].is_string())
    return j["error"]["code"];
  return "";
}

std::string error_message(const http::HttpResponse& r) {
  try {
    const json j = json::parse(r.body);
    if (j.contains("error") && j["error"].contains("message")) return j["error"]["message"].get<std::string>();
  } catch (const json::exception&) {
  }
  return r.body.empty() ? "no details" : r.body;
}

class ChatSession {
 public:
  explicit ChatSession(const ChatArgs& a) : args_(a), client_(a.url, a.api_key), system_(a.system) {}

  // The model the head serves, or "" (with a warning) when none is loaded.
  std::string model() const {
    const auto r = client_.get("/v1/models");
    if (r.status == 401) throw std::runtime_error("the head refused the API key: pass --api-key KEY (or set $HEARTH_API_KEY)");
    if (r.status != 200)
      throw std::runtime_error("GET /v1/models answered " + std::to_string(r.status) + ": " + error_message(r));
    const json j = json::parse(r.body);
    return j["data"].empty() ? "" : j["data"][0]["id"].get<std::string>();
  }

  // Sends the conversation plus `user`, streams the answer to stdout, keeps both in the history.
  // A conversation grown past the context leaves out its oldest exchanges (never the system
  // prompt), and says so.
  Reply ask(const std::string& user) {
    for (;;) {
      try {
        return ask_once(user);
      } catch (const ContextFull& e) {
        if (history_.size() < 2) throw std::runtime_error(std::string("the head answered 400: ") + e.what());
        history_.erase(history_.begin(), history_.begin() + 2);
        std::fprintf(stderr, "[the oldest exchange no longer fits the model's context: left out; %zu message(s) kept]\n",
                     history_.size());
      }
    }
  }

  void reset() { history_.clear(); }
  void set_system(const std::string& s) { system_ = s; }
  const std::string& url() const { return client_.base_url(); }

 private:
  Reply ask_once(const std::string& user) {
    json messages = json::array();
    if (!system_.empty()) messages.push_back({{"role", "system"}, {"content", system_}});
    for (const auto& m : history_) messages.push_back(m);
    messages.push_back({{"role", "user"}, {"content", user}});
    json body = {{"messages", messages}, {"stream", true}, {"stream_options", {{"include_usage", true}}}};
    if (args_.temperature) body["temperature"] = *args_.temperature;
    body["max_tokens"] = args_.max_tokens.value_or(kDefaultReplyTokens);
    if (args_.seed) body["seed"] = *args_.seed;
    if (!args_.reasoning_effort.empty()) body["reasoning_effort"] = args_.reasoning_effort;

    Reply reply;
    std::string error;
    uint32_t chunks = 0;  // one per token, as far as the text goes
    http::SseParser sse;
    InterruptScope interrupt;
    const auto start = Clock::now();
    bool done = false;  // the stream's end marker came: anything else is a cut answer
    ReplyPrinter printer(!args_.hide_reasoning);
    const auto on_event = [&](const std::string& data) {
      if (data == "[DONE]") {
        done = true;
        return;
      }
      const json j = json::parse(data, nullptr, false);
      if (j.is_discarded()) return;
      if (j.contains("error")) error = j["error"].value("message", "the generation failed");
      if (j.contains("usage") && j["usage"].is_object()) reply.tokens = j["usage"].value("completion_tokens", 0u);
      if (j.contains("hearth")) reply.decode_tok_s = j["hearth"].value("decode_tok_s", 0.0);
      if (!j.contains("choices") || j["choices"].empty()) return;
      const json& c = j["choices"][0];
      if (c.contains("finish_reason") && c["finish_reason"].is_string()) reply.finish_reason = c["finish_reason"];
      if (!c.contains("delta") || !c["delta"].is_object()) return;
      const std::string answer = text_field(c["delta"], "content"), reasoning = text_field(c["delta"], "reasoning_content");
      if (answer.empty() && reasoning.empty()) return;
      if (chunks++ == 0) reply.first_s = std::chrono::duration<double>(Clock::now() - start).count();
      reply.text += answer;  // the history keeps the answer: the templates drop earlier reasoning
      printer.reasoning(reasoning);
      printer.answer(answer);
    };
    constexpr const char* kCut =
        "the connection to the head was lost before the answer ended (did the head stop?): the reply above is incomplete";
    http::HttpResponse r;
    try {
      r = client_.post_stream(
          "/v1/chat/completions", body.dump(-1, ' ', false, json::error_handler_t::replace),
          [&](std::string_view bytes) {
            sse.push(bytes, on_event);
            return !interrupt.interrupted();
          },
          [&] { return !interrupt.interrupted(); });
    } catch (const std::runtime_error&) {  // a network error (boost's system_error is one)
      if (chunks == 0 && error.empty()) throw;  // nothing came: the plain network error says more
      if (error.empty()) throw std::runtime_error(kCut);
    }
    reply.total_s = std::chrono::duration<double>(Clock::now() - start).count();
    reply.stopped = interrupt.interrupted();
    if (reply.tokens == 0) reply.tokens = chunks;  // stopped before the usage came
    if (reply.decode_tok_s == 0 && chunks > 1 && reply.total_s > reply.first_s)
      reply.decode_tok_s = (chunks - 1) / (reply.total_s - reply.first_s);
    if (reply.stopped && r.status == 0) return reply;  // stopped before any answer
    if (r.status == 401) throw std::runtime_error("the head refused the API key: pass --api-key KEY (or set $HEARTH_API_KEY)");
    if (r.status == 400 && error_code(r) == "context_length_exceeded") throw ContextFull(error_message(r));
    if (r.status != 200) throw std::runtime_error("the head answered " + std::to_string(r.status) + ": " + error_message(r));
    if (!error.empty()) throw std::runtime_error(error);
    if (!done && !reply.stopped) throw std::runtime_error(kCut);
    history_.push_back({{"role", "user"}, {"content", user}});
    history_.push_back({{"role", "assistant"}, {"content", reply.text}});
    return reply;
  }

  const ChatArgs& args_;
  http::HttpClient client_;
  std::string system_;
  json history_ = json::array();
};

void print_summary(const Reply& r) {
  const bool tty = ::isatty(2);
  std::fprintf(stderr, "%s[%s%u tokens in %.2f s, first after %.2f s, %.1f tok/s%s]%s\n", tty ? "\033[2m" : "",
               r.stopped ? "stopped; " : "", r.tokens, r.total_s, r.first_s, r.decode_tok_s,
               r.finish_reason == "length" ? "; cut at --max-tokens or the end of the context" : "", tty ? "\033[0m" : "");
}

std::string history_file() {
  const char* home = std::getenv("HOME");
  if (!home) return "";
  const std::filesystem::path dir = std::filesystem::path(home) / ".local/share/hearth";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return ec ? "" : (dir / "chat_history").string();
}

// One line from libedit, nullopt at end of input (Ctrl-D).
std::optional<std::string> read_line(const char* prompt) {
  char* line = ::readline(prompt);
  if (line == nullptr) return std::nullopt;
  std::string s(line);
  std::free(line);
  return s;
}

void interactive(ChatSession& chat) {
  const std::string model = chat.model();
  std::fprintf(stderr, "hearth chat with %s at %s\n", model.empty() ? "(no model loaded yet)" : model.c_str(),
               chat.url().c_str());
  std::fprintf(stderr,
               "end a line with \\ to go on; /reset forgets the conversation, /system TEXT sets the system prompt, /exit quits;\n"
               "Ctrl-C stops a reply\n");
  const std::string history = history_file();
  ::using_history();
  if (!history.empty()) ::read_history(history.c_str());
  for (;;) {
    std::optional<std::string> line = read_line("> ");
    if (!line) break;
    std::string input = *line;
    while (!input.empty() && input.back() == '\\') {
      input.pop_back();
      input += '\n';
      std::optional<std::string> more = read_line(". ");
      if (!more) break;
      input += *more;
    }
    if (input.find_first_not_of(" \t\n") == std::string::npos) continue;
    ::add_history(input.c_str());
    if (input == "/exit" || input == "/quit") break;
    if (input == "/reset") {
      chat.reset();
      std::fprintf(stderr, "(conversation forgotten)\n");
      continue;
    }
    if (input == "/system" || input.rfind("/system ", 0) == 0) {
      const std::string text = input.size() > 8 ? input.substr(8) : "";
      chat.set_system(text);
      std::fprintf(stderr, text.empty() ? "(no system prompt)\n" : "(system prompt set)\n");
      continue;
    }
    if (input[0] == '/' && input.find(' ') == std::string::npos) {
      std::fprintf(stderr, "unknown command %s: /reset, /system TEXT, /exit\n", input.c_str());
      continue;
    }
    try {
      const Reply r = chat.ask(input);
      std::fputc('\n', stdout);
      std::fflush(stdout);
      print_summary(r);
    } catch (const std::exception& e) {
      std::fputc('\n', stdout);
      spdlog::error("{}", e.what());
    }
  }
  if (!history.empty()) ::write_history(history.c_str());
}

void chat(const ChatArgs& a) {
  ChatSession session(a);
  if (::isatty(0)) {
    interactive(session);
    return;
  }
  // Scripted: the whole input is one message.
  std::string input((std::istreambuf_iterator<char>(std::cin)), {});
  while (!input.empty() && (input.back() == '\n' || input.back() == '\r')) input.pop_back();
  if (input.empty()) throw std::runtime_error("nothing to send: stdin is empty (run `hearth chat` on a terminal to chat)");
  const Reply r = session.ask(input);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  print_summary(r);
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  const char* url = std::getenv("HEARTH_URL");
  a->url = url ? url : "http://127.0.0.1:8080";
  if (const char* key = std::getenv("HEARTH_API_KEY")) a->api_key = key;
  CLI::App* cmd =
      app.add_subcommand("chat", "Chat with the cluster through the head's HTTP API (stdin not a terminal: answer it once)");
  cmd->add_option("--url", a->url, "The head's HTTP address (default: $HEARTH_URL or http://127.0.0.1:8080)");
  cmd->add_option("--api-key", a->api_key, "Key of the head's --api-key (default: $HEARTH_API_KEY)");
  cmd->add_option("--system", a->system, "System prompt");
  cmd->add_option("--temp", a->temperature, "Temperature; 0 = greedy (default: the head's, 0.8)")->check(CLI::Range(0.0, 2.0));
  cmd->add_option("--max-tokens", a->max_tokens, "Tokens per reply at most (default: 512)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a->seed, "Random seed (default: a new one per reply)");
  cmd->add_option("--reasoning-effort", a->reasoning_effort,
                  "Reasoning models: none (Qwen 3 / 3.5 answer without thinking), or low, medium, high (gpt-oss's effort)")
      ->check(CLI::IsMember({"none", "minimal", "low", "medium", "high"}));
  cmd->add_flag("--hide-reasoning", a->hide_reasoning,
                "Do not show a reasoning model's reasoning (shown dimmed on a terminal, never in a pipe)");
  cmd->callback([a] { chat(*a); });
}

}  // namespace hearth::cli
