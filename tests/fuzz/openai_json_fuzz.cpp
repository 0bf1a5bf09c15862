// libFuzzer target: a request body as POST /v1/chat/completions and /v1/completions receive it.
// The parsers must answer anything bad with ApiError (a 4xx the client sees) and nothing else;
// what they accept must be within the limits the gateway and the sampler rely on.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "gateway/openai_api.h"

using namespace hearth::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void accepted(const CompletionRequest& r, uint64_t seed) {
  const auto& s = r.sampling;
  check(std::isfinite(s.temperature) && s.temperature >= 0 && s.temperature <= 2);
  check(s.top_p >= 0 && s.top_p <= 1 && s.min_p >= 0 && s.min_p <= 1 && s.top_k >= 0);
  check(std::isfinite(s.repeat_penalty) && s.repeat_penalty > 0);
  check(r.max_tokens <= (1u << 20));
  check(r.stop.size() <= 16);
  for (const auto& stop : r.stop) check(!stop.empty() && stop.size() <= 512);
  (void)seed;
  // The gateway echoes strings from the request in its responses: serialising must not throw.
  nlohmann::json j = {{"model", r.model}, {"prompt", r.prompt}};
  for (const auto& m : r.messages) j["messages"].push_back({{"role", m.role}, {"content", m.content}});
  (void)dump(j);
}

void one(bool chat, const std::string& body) {
  const uint64_t seed = 42;
  try {
    const CompletionRequest r = chat ? parse_chat_request(body, seed) : parse_completion_request(body, seed);
    check(r.chat == chat);
    accepted(r, seed);
  } catch (const ApiError& e) {
    check(e.status() >= 400 && e.status() < 500);
    (void)e.body();  // the error message may quote the body's bytes: it must serialise
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  one(true, body);
  one(false, body);
  return 0;
}
