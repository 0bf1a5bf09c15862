// libFuzzer target: the bytes a client sends on the head's HTTP port. They go through Beast's
// request parser with the server's limits (gateway/http_server.cpp: body limit, default header
// limit), fed in two pieces as a socket would deliver them; a complete request's body then goes
// to the OpenAI parser of its route. Any outcome other than a parsed request, a parse error (the
// server answers 400/413 and closes) or an ApiError (4xx) is a finding.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "gateway/http_server.h"
#include "gateway/openai_api.h"

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using namespace hearth::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Feeds bytes the way beast::http::read does: put() until it stops consuming.
size_t feed(bhttp::request_parser<bhttp::string_body>& p, const uint8_t* data, size_t size, beast::error_code& ec) {
  size_t used = 0;
  while (used < size && !p.is_done()) {
    const size_t n = p.put(boost::asio::buffer(data + used, size - used), ec);
    if (ec == bhttp::error::need_more) {
      ec = {};
      break;
    }
    if (ec) break;
    if (n == 0) break;
    used += n;
  }
  return used;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte says where the stream is cut in two, the rest is the stream.
  const size_t cut = data[0] % size;
  ++data;
  --size;
  const size_t first = cut < size ? cut : size;

  bhttp::request_parser<bhttp::string_body> p;
  p.body_limit(kMaxRequestBody);
  p.eager(true);
  beast::error_code ec;
  // Unconsumed bytes of the first piece stay in front of the second, as in a flat_buffer.
  const size_t used = feed(p, data, first, ec);
  if (!ec && !p.is_done()) feed(p, data + used, size - used, ec);
  if (!ec && !p.is_done()) p.put_eof(ec);
  if (ec || !p.is_done()) return 0;

  const auto& req = p.get();
  check(req.body().size() <= kMaxRequestBody);
  const std::string target(req.target());
  const bool chat = target.rfind("/v1/chat/completions", 0) == 0;
  try {
    const CompletionRequest r = chat ? parse_chat_request(req.body(), 7) : parse_completion_request(req.body(), 7);
    check(r.chat == chat && r.stop.size() <= 16 && r.max_tokens <= (1u << 20));
  } catch (const ApiError& e) {
    check(e.status() >= 400 && e.status() < 500);
  }
  (void)req.keep_alive();
  return 0;
}
