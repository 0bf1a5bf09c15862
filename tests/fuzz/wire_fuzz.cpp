// libFuzzer target: one ZeroMQ frame as a daemon receives it. decode() must refuse anything
// malformed with DecodeError; what it accepts is then read the way the daemons read it: the whole
// message traversed (printed), and the checks that guard the planner and the sampler
// (from_wire of device profiles and sampling parameters). Reading a field of an accepted message
// may still throw kj::Exception (the handlers catch it at the edge), so that is not a finding;
// a crash, a sanitizer report or an unbounded allocation is.
#include <kj/exception.h>
#include <kj/string-tree.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <exception>
#include <zmq.hpp>

#include "cluster/wire_convert.h"
#include "transport/codec.h"

using namespace hearth;
namespace wire = transport::wire;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void sampling(wire::SamplingParams::Reader r) {
  try {
    const runtime::SamplingParams p = cluster::from_wire(r);
    // What from_wire accepts, the sampler may use without further checks.
    check(std::isfinite(p.temperature) && p.temperature >= 0 && p.top_p >= 0 && p.top_p <= 1 && p.min_p >= 0 && p.min_p <= 1 &&
          p.repeat_penalty > 0 && p.top_k >= 0 && p.repeat_last_n >= 0 && p.repeat_last_n <= 4096);
  } catch (const std::invalid_argument&) {
  }
}

void profile(wire::DeviceProfile::Reader r) {
  try {
    const partitioner::DeviceProfile d = cluster::from_wire(r);
    check(!d.name.empty() && d.name.size() <= 64 && d.memory_bandwidth_bytes_per_s > 0 && d.prefill_flop_s > 0 &&
          std::isfinite(d.step_overhead_s) && d.step_overhead_s >= 0);
  } catch (const std::invalid_argument&) {
  }
}

// Every field of every list, printed: the deepest read a handler could do. Done on a second reader
// whose traversal limit is proportional to the frame (a list of zero-sized structs may claim
// 500,000 elements in 300 bytes; Cap'n Proto charges each against decode()'s fixed limit, which
// bounds what a handler walks, but printing them all costs seconds and a gigabyte under ASan).
void print_all(const uint8_t* data, size_t size) {
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, words.size() * sizeof(capnp::word));
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 16 * words.size() + 64;
  options.nestingLimit = 16;
  capnp::FlatArrayMessageReader reader(words, options);
  (void)kj::str(reader.getRoot<wire::Envelope>());
}

void read(wire::Envelope::Reader env) {
  (void)transport::kind_name(env);
  switch (env.which()) {
    case wire::Envelope::HELLO:
      if (env.getHello().hasProfile()) profile(env.getHello().getProfile());
      break;
    case wire::Envelope::DEVICES_REPLY:
      for (auto d : env.getDevicesReply().getDevices())
        if (d.hasProfile()) profile(d.getProfile());
      break;
    case wire::Envelope::FORWARD:
      for (auto c : env.getForward().getChunks())
        if (c.hasSampling()) sampling(c.getSampling());
      break;
    case wire::Envelope::GENERATE_REQUEST:
      if (env.getGenerateRequest().hasSampling()) sampling(env.getGenerateRequest().getSampling());
      break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const zmq::message_t frame(data, size);
  try {
    const transport::Decoded d = transport::decode(frame);
    read(d.envelope());
    print_all(data, size);  // decode() accepted it: a whole number of words with a valid segment table
  } catch (const transport::DecodeError&) {
  } catch (const kj::Exception&) {
  }
  return 0;
}
