#include "transport/codec.h"

#include <kj/exception.h>

#include <cstring>

namespace hearth::transport {

namespace {

// The biggest legitimate envelope is under kMaxEnvelopeBytes; a reader may traverse it a few
// times (accessors re-read lists), so allow a small multiple of its size in words.
constexpr uint64_t kTraversalLimitWords = 4 * kMaxEnvelopeBytes / sizeof(capnp::word);
constexpr int kNestingLimit = 16;

}  // namespace

zmq::message_t encode(capnp::MessageBuilder& builder) {
  const kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
  const auto bytes = flat.asBytes();
  return zmq::message_t(bytes.begin(), bytes.size());
}

Decoded decode(const zmq::message_t& frame) {
  const size_t n = frame.size();
  if (n == 0) throw DecodeError("empty frame");
  if (n > kMaxEnvelopeBytes) throw DecodeError("frame of " + std::to_string(n) + " bytes exceeds the envelope limit");
  if (n % sizeof(capnp::word) != 0) throw DecodeError("frame of " + std::to_string(n) + " bytes is not a whole number of words");
  Decoded d;
  d.words_ = kj::heapArray<capnp::word>(n / sizeof(capnp::word));
  std::memcpy(d.words_.begin(), frame.data(), n);  // aligned copy: ZeroMQ frames may be misaligned
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kTraversalLimitWords;
  options.nestingLimit = kNestingLimit;
  try {
    const kj::ArrayPtr<const capnp::word> words(d.words_.begin(), d.words_.size());
    // A flat message must use exactly the bytes it came in; trailing garbage is refused.
    if (capnp::expectedSizeInWordsFromPrefix(words) != words.size())
      throw DecodeError("frame size does not match its segment table");
    d.reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words, options);
    d.root_ = d.reader_->getRoot<wire::Envelope>();
    (void)d.root_.which();  // touches the union tag: an out-of-range pointer throws here
  } catch (const kj::Exception& e) {
    throw DecodeError(std::string("malformed message: ") + e.getDescription().cStr());
  }
  return d;
}

const char* kind_name(wire::Envelope::Reader env) {
  using W = wire::Envelope::Which;
  switch (env.which()) {
    case W::HELLO: return "hello";
    case W::HELLO_ACK: return "helloAck";
    case W::HEARTBEAT: return "heartbeat";
    case W::ASSIGNMENT: return "assignment";
    case W::WEIGHT_REQUEST: return "weightRequest";
    case W::WEIGHT_CHUNK: return "weightChunk";
    case W::LOAD_STATUS: return "loadStatus";
    case W::FORWARD: return "forward";
    case W::RESULT: return "result";
    case W::RELEASE: return "release";
    case W::ERROR: return "error";
    case W::LINK_PROBE: return "linkProbe";
    case W::PING: return "ping";
    case W::PONG: return "pong";
    case W::LINK_REPORT: return "linkReport";
    case W::DEVICES_REQUEST: return "devicesRequest";
    case W::DEVICES_REPLY: return "devicesReply";
    case W::LAUNCH_REQUEST: return "launchRequest";
    case W::LAUNCH_PROGRESS: return "launchProgress";
    case W::LAUNCH_REPLY: return "launchReply";
    case W::GENERATE_REQUEST: return "generateRequest";
    case W::GENERATE_EVENT: return "generateEvent";
    case W::STATUS_REQUEST: return "statusRequest";
    case W::STATUS_REPLY: return "statusReply";
    case W::STOP_REQUEST: return "stopRequest";
    case W::STOP_REPLY: return "stopReply";
    case W::CANCEL_REQUEST: return "cancelRequest";
    case W::PAIR_REQUEST: return "pairRequest";
    case W::PAIR_REPLY: return "pairReply";
    case W::HELLO_REQUEST: return "helloRequest";
    case W::COMMIT: return "commit";
    case W::MODELS_REQUEST: return "modelsRequest";
    case W::MODELS_REPLY: return "modelsReply";
  }
  return "unknown";
}

}  // namespace hearth::transport
