// The stage this node runs for the current plan, and its data path: Forward and Release messages
// in (each checked against the stage before any of it reaches a kernel), batches merged into one
// pass over the weights, hidden states pushed to the next stage or, on the last stage, sampled
// tokens sent back to the head. On a head it is also the head's own first stage (LocalStage).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/counters.h"
#include "cluster/host.h"
#include "cluster/stage_host.h"
#include "runtime/format/gguf.h"
#include "runtime/gpu/gpu.h"
#include "runtime/kernels/thread_pool.h"
#include "transport/codec.h"
#include "transport/sockets.h"

namespace hearth::cluster {

class StageRunner final : public LocalStage {
 public:
  // Where the runner's reports go: errors to the head; the tokens a last stage sampled are
  // offered to `sampled` first (true: taken, as the head itself takes them), else sent as a Result.
  struct Reports {
    std::function<void(capnp::MessageBuilder&)> to_head;
    std::function<bool(const std::vector<SampledToken>&)> sampled;
  };
  // gpu: the daemon's --gpu choice (runtime/gpu/gpu.h), applied to every stage it loads.
  // memory_budget: the bytes a stage may take on this device (0: no limit); a stage whose weights
  // do not fit beside its caches and buffers pages the rest from its file (layer_pager.h).
  StageRunner(const transport::SocketFactory& sockets, runtime::ThreadPool& pool, DropStats& drops, std::string device_name,
              std::string gpu, uint64_t memory_budget, Reports reports);

  // LocalStage. `load` maps the stage's layers from a GGUF file: the whole model (the head's own
  // stage, or a device's local copy) or the stage file a device received.
  void load(uint64_t plan_id, const std::string& model_path, const runtime::StageSpec& spec, const runtime::StageOptions& options,
            const NextHop& next, const StepTime& planned) override;
  void unload() override;
  bool loaded() const override { return stage_ != nullptr; }
  int max_batch() const override { return stage_->host->max_batch(); }
  bool has_output() const override { return stage_->host->spec().has_output; }
  StageOutput compute(const Batch& batch) override;
  bool push_forward(const Batch& batch, const std::vector<float>& hidden) override;
  void release(const std::vector<uint64_t>& seqs) override;
  StageCounters counters() const override { return work_.snapshot(); }

  // A Forward or Release from the data socket: queued for process(). Throws
  // std::invalid_argument for one that does not fit the stage.
  void accept_forward(transport::wire::Forward::Reader f, zmq::message_t* payload);
  void accept_release(transport::wire::Release::Reader r);
  // Runs what is queued.
  void process();
  bool has_pending() const { return !pending_.empty(); }

  // The plan whose stage is loaded (0: none); read by the heartbeat thread.
  const std::atomic<uint64_t>& plan_id() const { return plan_id_; }
  const WorkStats& work() const { return work_; }

 private:
  // off_ram_bytes: weights a graphics card holds, which the RAM budget need not.
  // weight_room: what the weights may take of the device's memory, 0 when not known (as
  // runtime::lay_out_for_cpu takes it).
  runtime::PagingPlan paging_for(const std::shared_ptr<runtime::StageWeights>& weights, const runtime::StageOptions& options,
                                 uint64_t off_ram_bytes, uint64_t& weight_room);
  struct Loaded {
    std::unique_ptr<runtime::GgufFile> file;
    std::unique_ptr<runtime::StageGpu> gpu;  // what of the stage runs on a GPU (null: none); outlives host
    std::unique_ptr<StageHost> host;
    std::optional<zmq::socket_t> push;  // to the next stage's data socket (or the head's)
    std::string next_endpoint;
    runtime::TensorType wire_type = runtime::TensorType::F32;  // of the forwards it pushes
    runtime::PagerStats paged;  // its pager's figures already added to work_
    StepTime planned;           // the plan's time for its decode steps
  };
  // A queued item: a batch, or (no chunks) a release of `released` kept in order with batches.
  struct Pending {
    Batch batch;
    std::vector<uint64_t> released;
  };
  void run_batch(Batch batch);
  void count_paging();  // adds the pager's reads since the last call to work_
  void send_result(const std::vector<SampledToken>& sampled);
  void report_refusal(const Batch& batch, const std::string& why);
  void push_release(const std::vector<uint64_t>& seqs);

  const transport::SocketFactory& sockets_;
  runtime::ThreadPool& pool_;
  DropStats& drops_;
  std::string device_name_;
  std::string gpu_;
  uint64_t memory_budget_;
 // --gpu
  Reports reports_;
  std::unique_ptr<Loaded> stage_;
  std::atomic<uint64_t> plan_id_{0};
  std::deque<Pending> pending_;  // in arrival order
  WorkStats work_;
};

}  // namespace hearth::cluster
