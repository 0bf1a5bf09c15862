#include "cluster/pairing.h"

#include "transport/printable.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "transport/codec.h"

namespace hearth::cluster {

namespace fs = std::filesystem;
namespace wire = transport::wire;

PairingRegistry::PairingRegistry(fs::path keys_dir) : dir_(std::move(keys_dir)) {
  secret_ = transport::read_first_line(dir_ / "pairing.secret");
  if (secret_.size() != 32) {
    secret_ = transport::random_secret();
    transport::write_private_file(dir_ / "pairing.secret", secret_ + "\n");
  }
  std::ifstream in(dir_ / "allowed");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string key, node_id;
    if (fields >> key >> node_id && transport::is_z85_key(key)) paired_[key] = node_id;
  }
}

std::string PairingRegistry::pair(const std::string& public_key, const std::string& node_id, const std::string& secret) {
  if (!transport::secrets_equal(secret, secret_)) return "wrong join token: copy it again from the head (`hearth token` there)";
  if (!transport::is_z85_key(public_key)) return "no CURVE key on the connection";
  if (!transport::valid_node_id(node_id)) return "invalid node id (1-64 of [A-Za-z0-9._-])";
  paired_[public_key] = node_id;
  save();
  return "";
}

void PairingRegistry::save() const {
  std::string text;
  for (const auto& [key, id] : paired_) text += key + " " + id + "\n";
  transport::write_private_file(dir_ / "allowed", text);
}

void pair_with_head(const transport::SocketFactory& sockets, const std::string& endpoint, const transport::JoinToken& token,
                    const std::string& node_id, std::chrono::milliseconds timeout) {
  zmq::socket_t s = sockets.connect_dealer(endpoint, "", {.server_key = token.head_public_key});
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::Envelope>().initPairRequest();
  r.setNodeId(node_id);
  r.setSecret(token.secret);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // ZMQ_IMMEDIATE: the send waits until the handshake succeeded, so a head that is not up yet
  // (or a wrong head key) shows as a timeout here.
  s.set(zmq::sockopt::sndtimeo, static_cast<int>(timeout.count()));
  if (!s.send(transport::encode(b), zmq::send_flags::none))
    throw std::runtime_error("no answer from the head's pairing socket at " + endpoint +
                             " (is the head up, and is the token from this head?)");
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  while (std::chrono::steady_clock::now() < deadline) {
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    if (!(item.revents & ZMQ_POLLIN)) continue;
    zmq::message_t m;
    if (!s.recv(m, zmq::recv_flags::dontwait)) continue;
    const transport::Decoded d = transport::decode(m);
    if (!d.envelope().isPairReply()) continue;
    const auto reply = d.envelope().getPairReply();
    if (!reply.getOk()) throw std::runtime_error(std::string("the head refused to pair: ") + reply.getMessage().cStr());
    return;
  }
  throw std::runtime_error("the head's pairing socket at " + endpoint + " did not answer");
}

}  // namespace hearth::cluster
