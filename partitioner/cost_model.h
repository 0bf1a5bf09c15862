#pragma once
// The cost model of docs/partitioner.md §2: time of a stage's decode step and
// prefill chunk (per-block roofline), hop times, and a stage's memory.
//
// A CostModel copies its inputs and precomputes prefix sums, so every query below
// is O(1). It is immutable after construction and safe to share across threads.

#include <algorithm>
#include <span>
#include <vector>

#include "partitioner/device_profile.h"
#include "partitioner/link_table.h"
#include "partitioner/model_spec.h"
#include "partitioner/options.h"

namespace hearth::partitioner {

inline constexpr double kTokenIdBytes = 4;      // bytes per sampled token id on the return hop
inline constexpr double kScratchElemBytes = 4;  // bytes per element of f32 compute buffers
// bytes per input element of a matmul's quantized activations: a q8_0 row (34 B per 32) and a
// q8_k row (292 B per 256), both kept by the runtime's MatmulScratch
inline constexpr double kQuantizedInputBytesPerElem = 34.0 / 32 + 292.0 / 256;
// and, for f16 weights, their f16 activations
inline constexpr double kF16InputBytesPerElem = 2;
// Attention's buffers per head, as runtime/model/stage.h sizes them: score rows for 8 tokens at a
// time (Stage::kTokenBlock), and a 32 KiB tile (kKvTileFloats) a non-f32 KV cache is read into.
inline constexpr double kAttentionTokens = 8;
inline constexpr double kKvTileBytes = 32768;
inline constexpr int kMessageBuffers = 4;  // activation messages a stage holds: 2 in, 2 out
// Tokens per forward() a stage is sized for when chunking is automatic: the runtime's
// StageOptions::max_batch default, which the head uses too.
inline constexpr int kDefaultUbatch = 256;
inline constexpr int kMaxMicroBatches = 16;  // most micro-batches in flight considered for throughput

// Prefill of `tokens` prompt tokens that follow `offset` earlier ones.
struct PromptChunk {
  int tokens = 0;
  int offset = 0;
};

// Splits a prompt into `n_chunks` chunks of equal FLOPs (§4.7): attention grows with
// the offset, so later chunks are shorter. REQUIRES: 1 <= n_chunks <= prompt_tokens.
std::vector<PromptChunk> equal_flop_chunks(const ModelSpec& spec, int prompt_tokens, int n_chunks);

// Splits a prompt into chunks of `chunk_tokens` (the last one shorter).
std::vector<PromptChunk> fixed_size_chunks(int prompt_tokens, int chunk_tokens);

struct MemoryUse {
  double weight_bytes = 0;  // bytes: blocks, plus embedding / LM head when held
  double kv_bytes = 0;      // bytes: ctx x streams tokens of K and V for each held block
  double work_bytes = 0;    // bytes: scratch buffers, logits, activation messages
  double gpu_weight_bytes = 0;  // of weight_bytes, those copied to the device's GPU
  double off_ram_bytes = 0;     // of those, the ones RAM no longer holds (a graphics card's own memory)
  double total() const { return weight_bytes - off_ram_bytes + kv_bytes + work_bytes; }  // in the device's RAM
};

class CostModel {
 public:
  // REQUIRES: inputs pass validate_inputs() (positive sizes and rates).
  CostModel(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
            const PartitionOptions& options);

  const ModelSpec& spec() const { return spec_; }
  const std::vector<DeviceProfile>& devices() const { return devices_; }
  const LinkTable& links() const { return links_; }
  const PartitionOptions& options() const { return options_; }
  int n_layers() const { return spec_.n_layers; }
  int n_devices() const { return static_cast<int>(devices_.size()); }

  // ---- workload candidates ----
  // Micro-batch sizes m worth trying, in rows: the passes of ceil(B / G) streams for G =
  // 1..min(B, kMaxMicroBatches), each stream's pass latency_rows() rows, at most max_batch rows
  // (fewer streams then); ascending, and with 1 and
  // latency_rows() (one stream's pass: the latency objective's).
  const std::vector<int>& micro_batches() const { return micro_batches_; }
  // Rows of one stream's decode pass: 1, or a draft's tokens + 1 (PartitionOptions::draft_tokens).
  int latency_rows() const { return 1 + std::max(0, options_.draft_tokens); }
  // Rows of a decode step with every stream decoding on a pipeline of n_stages stages: the head's
  // scheduler sends ceil(B / n_stages) streams' passes in each micro-batch, at most max_batch rows.
  int batched_rows(int n_stages) const {
    const int streams = (std::max(1, options_.streams) + n_stages - 1) / std::max(1, n_stages);
    return std::min(std::max(1, options_.max_batch), streams * latency_rows());
  }
  int micro_batch_index(int m) const;  // index into micro_batches(), or -1
  // Streams whose passes make up micro_batches()[mi], for the throughput objective: m /
  // latency_rows() when that is a whole number from 1 to B, else 0 (the 1-row entry of a
  // drafting launch, which only Prediction::ms_per_token reads).
  int throughput_streams(int mi) const;
  // Prompt chunkings worth trying for ttft (one entry when prefill_chunk is fixed).
  const std::vector<std::vector<PromptChunk>>& chunk_schedules() const { return schedules_; }

  // ---- time, seconds ----
  // Decode step of m streams on device d over blocks [first, last), plus the LM head
  // when with_output (§4.2). Every step pays the device's fixed overhead.
  double decode_time(int d, int first, int last, bool with_output, int m) const;
  // Its compute alone: no fixed overhead, no waiting for paged layers.
  double decode_compute_time(int d, int first, int last, bool with_output, int m) const;
  // Same for m = micro_batches()[mi], without searching for m.
  double decode_time_at(int mi, int d, int first, int last, bool with_output) const {
    return overhead_[d] + with_paging(d, first, last, with_output, decode_compute_at(mi, d, first, last, with_output));
  }
  double output_time(int d, int m) const;  // LM head for m streams on device d
  // Prefill of chunk `chunk` of schedule `schedule` on device d over blocks [first, last).
  double prefill_time(int d, int first, int last, int schedule, int chunk) const {
    const std::vector<double>& p = prefill_prefix_[schedule][chunk][d];
    const int g = gpu_share(d, first, last, last == n_layers()).end;
    double t = p[last] - p[g];
    if (g > first) t += gpu_prefill_prefix_[schedule][chunk][d][g] - gpu_prefill_prefix_[schedule][chunk][d][first];
    return overhead_[d] + with_paging(d, first, last, false, t);
  }
  // Hop of `bytes` from device `from` to device `to`; free on the same device.
  double hop_time(int from, int to, double bytes) const {
    if (from == to) return 0;
    const int k = from * n_devices() + to;
    return latency_[k] + bytes * inv_bandwidth_[k];
  }
  // Hop of `tokens` tokens' activations into the stage that starts at block `boundary`, at the
  // bytes per element of that link (see PartitionOptions::compress_below_bytes_per_s); free on
  // the same device. A row is n_embd wide, plus per-layer inputs of the blocks still to come
  // (ModelSpec::n_embd_per_layer): the earlier the cut, the more a hop carries.
  double activation_hop_time(int from, int to, double tokens, int boundary) const {
    if (from == to) return 0;
    const int k = from * n_devices() + to;
    return latency_[k] + tokens * hop_bytes_per_token_[k] * hop_width_[boundary] * inv_bandwidth_[k];
  }
  // Whether the hop from -> to carries compressed activations (wire type auto on a slow link).
  bool compressed_hop(int from, int to) const {
    return from != to && hop_bytes_per_token_[from * n_devices() + to] < activation_bytes_per_token_;
  }

  // ---- the device's GPU ----
  // What of stage [first, last) (with the LM head when with_output; the embedding when first is
  // 0) device d's GPU runs, as runtime/gpu places it: the first blocks whose weights fit its
  // budget together, [first, end), and the LM head when every block did and it fits beside them.
  // None without a GPU, for a weight type it has no shader for, for a mixture-of-experts model
  // (its experts stay on the CPU), and when the stage does not fit the device's RAM even so: it
  // then pages, which the runtime does only without a GPU.
  struct GpuShare {
    int end = 0;
    bool output = false;
  };
  GpuShare gpu_share(int d, int first, int last, bool with_output) const;
  // The LM head's time for m rows on the stage [first, n_layers) of device d: on its GPU or CPU.
  double stage_output_time(int d, int first, int m) const {
    return gpu_share(d, first, n_layers(), true).output ? gpu_output_time(d, m) : output_time(d, m);
  }

  // ---- memory, bytes ----
  MemoryUse memory(int d, int first, int last, bool with_embedding, bool with_output) const;
  // Fits the device's memory, or with paging (paged_bytes()) its storage makes up the rest.
  bool fits(int d, int first, int last, bool with_embedding, bool with_output) const {
    const MemoryUse use = memory(d, first, last, with_embedding, with_output);
    if (use.total() <= devices_[d].usable_memory_bytes) return true;
    const double paged = paged_bytes(d, first, last, with_embedding, with_output);
    return paged > 0 && paged <= weight_prefix_[last] - weight_prefix_[first];
  }
  // Bytes the stage reads from storage every step when its memory use exceeds the device's: the
  // excess, plus the two buffers paged layers are read into (runtime/model/layer_pager.h, sized
  // here by the widest block); only blocks are paged. 0 when it fits, or the device cannot page
  // (no measured storage, or PartitionOptions::allow_paging off).
  double paged_bytes(int d, int first, int last, bool with_embedding, bool with_output) const;
  double kv_bytes_per_layer() const { return kv_bytes_per_layer_; }  // all streams, full ctx (a layer with a KV cache)

 private:
  // Keys layer `layer`'s queries see: its sliding window, or 0 for the whole context.
  int layer_window(int layer) const { return spec_.layer_window.empty() ? 0 : spec_.layer_window[static_cast<size_t>(layer)]; }
  double layer_decode_time(int d, int layer, int m) const;
  // A block's products on device d's GPU, its attention on the CPU, and the GPU's per-layer cost.
  double gpu_layer_decode_time(int d, int layer, int m) const;
  double gpu_output_time(int d, int m) const;
  // The compute of decode_time_at, from the tables: the GPU's blocks, then the CPU's.
  double decode_compute_at(int mi, int d, int first, int last, bool with_output) const {
    const std::vector<double>& p = decode_prefix_[mi][d];
    const GpuShare g = gpu_share(d, first, last, with_output);
    double t = p[last] - p[g.end];
    if (g.end > first) t += gpu_decode_prefix_[mi][d][g.end] - gpu_decode_prefix_[mi][d][first];
    if (with_output) t += g.output ? gpu_output_time_[mi][d] : output_time_[mi][d];
    return t;
  }
  // A step's time on device d with its paged bytes read alongside the compute (the reader runs a
  // layer ahead): max(compute, read), not their sum. first == 0 holds the embedding.
  double with_paging(int d, int first, int last, bool with_output, double compute) const {
    if (storage_rate_[d] <= 0 || last <= first) return compute;
    const double paged = paged_bytes(d, first, last, first == 0, with_output);
    return paged > 0 ? std::max(compute, paged / storage_rate_[d]) : compute;
  }
  // memory() with the GPU's share given.
  MemoryUse memory_with(int d, int first, int last, bool with_embedding, bool with_output, GpuShare share) const;
  double layer_prefill_time(int d, int layer, const PromptChunk& chunk) const;
  double gpu_layer_prefill_time(int d, int layer, const PromptChunk& chunk) const;
  void build_decode_tables();
  void build_prefill_tables();
  void build_links();

  ModelSpec spec_;
  std::vector<DeviceProfile> devices_;
  LinkTable links_;
  PartitionOptions options_;

  double decode_ctx_ = 0;                  // tokens of context when timing decode
  double kv_token_layer_bytes_ = 0;        // bytes of K+V per token per block
  double attention_flops_per_pair_ = 0;    // FLOP per (query, key) pair per block
  double activation_bytes_per_token_ = 0;  // bytes per token crossing a stage boundary
  double kv_bytes_per_layer_ = 0;          // bytes reserved per block: ctx x streams tokens
  double scratch_bytes_ = 0;               // bytes of compute buffers of a stage with blocks
  double logits_bytes_ = 0;                // bytes of logits on the LM-head stage
  double buffer_bytes_ = 0;                // bytes of activation messages per stage

  std::vector<double> weight_rate_, kv_rate_, flop_rate_, overhead_;  // per device
  std::vector<double> storage_rate_;  // bytes/s a device pages at; 0 = it does not page
  // Per device with a GPU (0 without): weight bytes it holds at most, its rates, per-layer cost.
  std::vector<double> gpu_budget_, gpu_weight_rate_, gpu_flop_rate_, gpu_overhead_;
  double widest_layer_bytes_ = 0;
  std::vector<double> weight_prefix_;                                 // bytes, [n_layers + 1]
  std::vector<double> kv_prefix_;  // bytes of KV caches (or recurrent states), all streams, [n_layers + 1]
  std::vector<int> micro_batches_;
  std::vector<std::vector<std::vector<double>>> decode_prefix_;  // [mi][d][layer + 1], seconds
  std::vector<std::vector<double>> output_time_;                 // [mi][d], seconds
  std::vector<std::vector<std::vector<double>>> gpu_decode_prefix_;  // the same on the GPU (0 without one)
  std::vector<std::vector<double>> gpu_output_time_;
  std::vector<std::vector<PromptChunk>> schedules_;
  std::vector<std::vector<std::vector<std::vector<double>>>> prefill_prefix_;  // [s][k][d][layer + 1]
  std::vector<std::vector<std::vector<std::vector<double>>>> gpu_prefill_prefix_;
  // Per link, [from * n + to]: seconds, seconds per byte, activation bytes per token.
  std::vector<double> latency_, inv_bandwidth_, hop_bytes_per_token_;
  std::vector<double> hop_width_;  // a boundary's row width over n_embd, [n_layers + 1]; 1 without per-layer inputs
};

}  // namespace hearth::partitioner
