// gateway/completion: the head's events for one request turned into its OpenAI response, checked
// in-process on a sink that records what would go to the client.
#include "gateway/completion.h"

#include <capnp/message.h>
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace hearth::http {

namespace {

using nlohmann::json;

struct RecordingSink : ResponseSink {
  int status = 0;
  std::string body;          // a whole response
  std::vector<json> chunks;  // a stream's events, [DONE] left out
  bool ended = false, done_marker = false;

  std::string peer() const override { return "test"; }
  void respond(int s, const std::string&, std::string b, const Headers&) override {
    status = s;
    body = std::move(b);
    ended = true;
  }
  void respond_error(int s, const std::string& message, const std::string&, const std::string&) override {
    status = s;
    body = message;
    ended = true;
  }
  void start_stream(int s, const std::string&, const Headers&) override { status = s; }
  void send_chunk(const std::string& data) override {
    // "data: {...}\n\n"
    const std::string payload = data.substr(6, data.size() - 8);
    if (payload == "[DONE]") done_marker = true;
    else chunks.push_back(json::parse(payload));
  }
  void end_stream() override { ended = true; }
};

HeadEvent token(std::string text, bool reasoning) {
  HeadEvent e;
  e.text = std::move(text);
  e.reasoning = reasoning;
  return e;
}

HeadEvent done(uint32_t generated) {
  HeadEvent e;
  e.done = true;
  e.finish_reason = "stop";
  e.prompt_tokens = 5;
  e.generated_tokens = generated;
  return e;
}

struct Run {
  std::shared_ptr<RecordingSink> sink = std::make_shared<RecordingSink>();
  GatewayStats stats;
  int cancels = 0;
  std::unique_ptr<Completion> completion;

  explicit Run(bool stream, std::vector<std::string> stop = {}) {
    CompletionRequest r;
    r.chat = true;
    r.stream = stream;
    r.stop = std::move(stop);
    completion = std::make_unique<Completion>(
        sink, r, ResponseHead{.id = "chatcmpl-1", .created = 1, .model = "m", .chat = true}, stats, [this](bool) { cancels++; },
        [] {});
  }
  void feed(const std::vector<HeadEvent>& events) {
    for (const auto& e : events) completion->on_event(e);
  }
  // The stream's deltas' fields, joined.
  std::string joined(const char* field) const {
    std::string out;
    for (const auto& c : sink->chunks)
      if (!c["choices"].empty() && c["choices"][0]["delta"].contains(field))
        out += c["choices"][0]["delta"][field].get<std::string>();
    return out;
  }
};

// A reply that thinks "Is it 4? Stop." and answers "4. Stop.": a character of the reasoning is cut
// in two tokens, and the stop string appears in both parts.
const std::vector<HeadEvent> kReply = {token("Is it \xE2\x80", true), token("\x94 4? Stop.", true), token("4.", false),
                                       token(" Stop.", false), token(" More", false)};

}  // namespace

TEST_SUITE("completion") {
  TEST_CASE("a whole response: the reasoning is the message's reasoning_content, counted in the usage") {
    Run run(false);
    run.feed({kReply[0], kReply[1], kReply[2], done(3)});
    REQUIRE(run.sink->status == 200);
    const json j = json::parse(run.sink->body);
    CHECK(j["choices"][0]["message"]["content"] == "4.");
    CHECK(j["choices"][0]["message"]["reasoning_content"] == "Is it \xE2\x80\x94 4? Stop.");
    CHECK(j["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2);
    CHECK(j["usage"]["completion_tokens"] == 3);
  }

  TEST_CASE("an event off the wire keeps whether it is reasoning") {
    for (const bool reasoning : {false, true}) {
      capnp::MallocMessageBuilder b;
      auto e = b.initRoot<transport::wire::GenerateEvent>();
      e.setText("hmm");
      e.setReasoning(reasoning);
      const HeadEvent h = HeadEvent::from_wire(e.asReader());
      CHECK(h.text == "hmm");
      CHECK(h.reasoning == reasoning);
    }
  }

  TEST_CASE("a reply without reasoning has no reasoning_content") {
    Run run(false);
    run.feed({token("4", false), done(1)});
    const json j = json::parse(run.sink->body);
    CHECK(j["choices"][0]["message"]["content"] == "4");
    CHECK_FALSE(j["choices"][0]["message"].contains("reasoning_content"));
    CHECK(j["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0);
  }

  TEST_CASE("a stop string ends the answer, not the reasoning") {
    Run run(false, {"Stop"});
    run.feed(kReply);
    CHECK(run.cancels == 1);  // at " Stop." of the answer
    run.feed({done(5)});
    const json j = json::parse(run.sink->body);
    CHECK(j["choices"][0]["message"]["content"] == "4. ");
    CHECK(j["choices"][0]["message"]["reasoning_content"] == "Is it \xE2\x80\x94 4? Stop.");
    CHECK(j["choices"][0]["finish_reason"] == "stop");
  }

  TEST_CASE("a stream: reasoning deltas first, the role on the first chunk, whole characters in each") {
    Run run(true);
    run.feed({kReply[0], kReply[1], kReply[2], done(3)});
    CHECK(run.sink->done_marker);
    CHECK(run.sink->ended);
    REQUIRE(run.sink->chunks.size() >= 3);
    const json& first = run.sink->chunks[0]["choices"][0]["delta"];
    CHECK(first["role"] == "assistant");
    CHECK(first["reasoning_content"] == "Is it ");  // the dash waits for its last byte
    CHECK_FALSE(first.contains("content"));
    CHECK(run.joined("reasoning_content") == "Is it \xE2\x80\x94 4? Stop.");
    CHECK(run.joined("content") == "4.");
    for (const auto& c : run.sink->chunks)  // no chunk mixes the two
      if (!c["choices"].empty())
        CHECK_FALSE((c["choices"][0]["delta"].contains("content") && c["choices"][0]["delta"].contains("reasoning_content")));
  }

  TEST_CASE("a stream cut inside a character of the reasoning by the answer's start loses nothing it can show") {
    Run run(true);
    run.feed({token("a\xE2\x80", true), token("4", false), done(2)});
    // The two bytes never complete: they are flushed (as the replacement the UTF-8 stream gives)
    // before the answer, and the answer is whole.
    CHECK(run.joined("reasoning_content").starts_with("a"));
    CHECK(run.joined("content") == "4");
  }
}

}  // namespace hearth::http
