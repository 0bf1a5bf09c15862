// Envelope <-> ZeroMQ frames, with every received frame checked before use.
//
//   capnp::MallocMessageBuilder b;
//   auto env = b.initRoot<wire::Envelope>();  env.initHeartbeat().setNodeId("a");
//   socket.send(encode(b), zmq::send_flags::none);
//   ...
//   Decoded d = decode(frame);                // throws DecodeError on anything malformed
//   auto env = d.envelope();                  // valid while `d` lives
//
// ZeroMQ hands out frames at any byte offset, and Debian's Cap'n Proto 0.9 refuses unaligned
// words, so decode() always copies into an aligned buffer (headers are small; bulk payloads
// travel in their own raw frames and are never parsed by Cap'n Proto). Traversal and nesting
// limits bound the work a hostile message can cause; reading a field of a malformed message can
// still throw kj::Exception later, so handlers catch it at the edge.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <bit>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "transport/hearth.capnp.h"

namespace hearth::transport {

namespace wire = ::hearth::wire;

// Raw payload frames (activations, weight chunks) are little-endian on the wire and are sent
// and read in host order (cluster/stage_runner.cpp), as are GGUF files: so only little-endian hosts.
static_assert(std::endian::native == std::endian::little,
              "hearth needs a little-endian host: its wire payloads and GGUF weights are little-endian and used in host order");

class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Largest Cap'n Proto frame accepted (bytes): room for a DevicesReply of many devices or a
// status report; bulk data never goes here.
constexpr size_t kMaxEnvelopeBytes = 1 << 20;

zmq::message_t encode(capnp::MessageBuilder& builder);

class Decoded {
 public:
  wire::Envelope::Reader envelope() const { return root_; }

 private:
  friend Decoded decode(const zmq::message_t& frame);
  kj::Array<capnp::word> words_;  // not std::vector: capnp::word cannot be copied or moved (clang rejects the resize)
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  wire::Envelope::Reader root_;
};

// Throws DecodeError naming what is wrong: empty, oversized, not a whole number of words,
// not a valid single-segment message, over the traversal or nesting limit.
Decoded decode(const zmq::message_t& frame);

// Name of the envelope's union member, for logs ("forward", "hello", ...).
const char* kind_name(wire::Envelope::Reader env);

}  // namespace hearth::transport
