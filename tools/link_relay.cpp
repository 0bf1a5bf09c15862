#include "tools/link_relay.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <stdexcept>

namespace hearth::tools {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kReadBytes = 64 * 1024;
// Reading stops while this much waits in one direction, so a slow receiver pushes back on the
// sender through TCP's own flow control instead of growing the relay's memory.
constexpr size_t kMaxQueuedBytes = 8u << 20;
constexpr double kSegmentBytes = 1448;  // TCP payload of a 1500-byte Ethernet frame

}  // namespace

RelayEndpoint parse_endpoint(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) throw std::invalid_argument("'" + text + "' is not HOST:PORT");
  RelayEndpoint e;
  e.host = text.substr(0, colon);
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
  int port = -1;
  try {
    size_t used = 0;
    port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = -1;
  } catch (...) {
  }
  if (port < 0 || port > 65535) throw std::invalid_argument("'" + text + "' has an invalid port");
  e.port = static_cast<uint16_t>(port);
  return e;
}

struct LinkRelay::Listener {
  explicit Listener(asio::io_context& io) : acceptor(io) {}
  tcp::acceptor acceptor;
  tcp::endpoint target;
};

// One relayed connection: two sockets and a delay line in each direction.
class LinkRelay::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(LinkRelay& relay, tcp::socket down)
      : relay_(relay), down_(std::move(down)), up_(relay.io_), pipes_{Pipe(down_, up_), Pipe(up_, down_)} {}

  void start(const tcp::endpoint& target) {
    up_.async_connect(target, [self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec) return self->close_all();  // the target is not there: the client sees its connection close
      boost::system::error_code ignored;
      // The relay must not add Nagle's delays of its own: it forwards what it reads at once.
      self->down_.set_option(tcp::no_delay(true), ignored);
      self->up_.set_option(tcp::no_delay(true), ignored);
      self->read(0);
      self->read(1);
    });
  }

 private:
  struct Chunk {
    Clock::time_point due;
    std::vector<uint8_t> data;  // empty: the sender closed its side
  };
  struct Pipe {
    Pipe(tcp::socket& f, tcp::socket& t) : from(f), to(t), timer(f.get_executor()) {}
    tcp::socket& from;
    tcp::socket& to;
    asio::steady_timer timer;
    std::vector<uint8_t> buffer = std::vector<uint8_t>(kReadBytes);
    std::deque<Chunk> queue;
    size_t queued_bytes = 0;
    Clock::time_point last_due{};
    bool writing = false, paused = false, eof = false;
  };

  void read(int d) {
    Pipe& p = pipes_[d];
    if (p.eof || closed_) return;
    if (p.queued_bytes > kMaxQueuedBytes) {
      p.paused = true;
      return;
    }
    p.from.async_read_some(asio::buffer(p.buffer), [self = shared_from_this(), d](const boost::system::error_code& ec, size_t n) {
      Pipe& p = self->pipes_[d];
      if (self->closed_) return;
      if (ec && ec != asio::error::eof) return self->close_all();
      if (ec) p.eof = true;
      const double delay = self->relay_.draw_delay(n);
      // Delivery never goes back in time: a chunk delayed by jitter or loss holds up the ones
      // behind it, as one TCP stream does.
      const auto due =
          std::max(p.last_due, Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(delay)));
      p.last_due = due;
      p.queue.push_back({due, std::vector<uint8_t>(p.buffer.begin(), p.buffer.begin() + static_cast<std::ptrdiff_t>(n))});
      p.queued_bytes += n;
      self->relay_.bytes_ += n;
      self->write(d);
      if (!p.eof) self->read(d);
    });
  }

  void write(int d) {
    Pipe& p = pipes_[d];
    if (p.writing || p.queue.empty() || closed_) return;
    p.writing = true;
    p.timer.expires_at(p.queue.front().due);
    p.timer.async_wait([self = shared_from_this(), d](const boost::system::error_code& ec) {
      Pipe& p = self->pipes_[d];
      if (ec || self->closed_) return;
      if (p.queue.front().data.empty()) {  // pass the sender's close on, once everything before it is out
        boost::system::error_code ignored;
        p.to.shutdown(tcp::socket::shutdown_send, ignored);
        p.queue.pop_front();
        p.writing = false;
        if (self->pipes_[0].eof && self->pipes_[1].eof && self->pipes_[0].queue.empty() && self->pipes_[1].queue.empty())
          self->close_all();
        return;
      }
      asio::async_write(p.to, asio::buffer(p.queue.front().data), [self, d](const boost::system::error_code& ec, size_t n) {
        Pipe& p = self->pipes_[d];
        if (ec || self->closed_) return self->close_all();
        p.queued_bytes -= n;
        p.queue.pop_front();
        p.writing = false;
        if (p.paused && p.queued_bytes <= kMaxQueuedBytes) {
          p.paused = false;
          self->read(d);
        }
        self->write(d);
      });
    });
  }

  void close_all() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    for (Pipe& p : pipes_) p.timer.cancel();
    down_.close(ignored);
    up_.close(ignored);
  }

  LinkRelay& relay_;
  tcp::socket down_, up_;  // the accepted client, the target
  Pipe pipes_[2];          // [0]: client -> target, [1]: target -> client
  bool closed_ = false;
};

LinkRelay::LinkRelay(asio::io_context& io, LinkShape shape) : io_(io), shape_(shape), rng_(shape.seed) {
  if (shape_.delay_s < 0 || shape_.jitter_s < 0 || shape_.loss_penalty_s < 0 || !(shape_.loss >= 0 && shape_.loss < 1))
    throw std::invalid_argument("link shape: delays must be >= 0 and loss in [0, 1)");
}

LinkRelay::~LinkRelay() { close(); }

uint16_t LinkRelay::add_route(const RelayEndpoint& listen, const RelayEndpoint& target) {
  tcp::resolver resolver(io_);
  const auto listen_at = *resolver.resolve(listen.host, std::to_string(listen.port)).begin();
  auto l = std::make_shared<Listener>(io_);
  l->target = resolver.resolve(target.host, std::to_string(target.port)).begin()->endpoint();
  l->acceptor.open(listen_at.endpoint().protocol());
  l->acceptor.set_option(tcp::acceptor::reuse_address(true));
  l->acceptor.bind(listen_at.endpoint());
  l->acceptor.listen();
  listeners_.push_back(l);
  accept(l);
  return l->acceptor.local_endpoint().port();
}

void LinkRelay::accept(const std::shared_ptr<Listener>& l) {
  l->acceptor.async_accept([this, l](const boost::system::error_code& ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted || !l->acceptor.is_open()) return;
    if (!ec) {
      ++connections_;
      std::make_shared<Session>(*this, std::move(s))->start(l->target);
    }
    accept(l);
  });
}

void LinkRelay::close() {
  boost::system::error_code ignored;
  for (auto& l : listeners_) l->acceptor.close(ignored);
}

double LinkRelay::draw_delay(size_t bytes, bool* lost) {
  double d = shape_.delay_s;
  if (shape_.jitter_s > 0) d += std::uniform_real_distribution<double>(-shape_.jitter_s, shape_.jitter_s)(rng_);
  d = std::max(0.0, d);
  bool l = false;
  if (shape_.loss > 0 && bytes > 0) {
    const double segments = std::ceil(static_cast<double>(bytes) / kSegmentBytes);
    const double p_chunk = 1 - std::pow(1 - shape_.loss, segments);
    l = std::uniform_real_distribution<double>(0, 1)(rng_) < p_chunk;
    if (l) d += shape_.loss_penalty_s;
  }
  if (lost) *lost = l;
  if (bytes > 0) {
    ++chunks_;
    if (l) ++lost_;
    delay_sum_us_ += static_cast<uint64_t>(d * 1e6);
  }
  return d;
}

RelayStats LinkRelay::stats() const {
  return {connections_.load(), bytes_.load(), chunks_.load(), lost_.load(), static_cast<double>(delay_sum_us_.load()) / 1e6};
}

}  // namespace hearth::tools
