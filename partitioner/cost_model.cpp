#include "partitioner/cost_model.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace hearth::partitioner {

namespace {

// The weight types runtime/gpu has a matmul shader for (shaders/matmul.comp).
bool gpu_shader_for(const std::string& type) {
  for (const char* t : {"f32", "f16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"})
    if (type == t) return true;
  return false;
}

// Chunk counts tried when prefill chunking is automatic (§4.7 suggests K* of a few to ~15).
constexpr int kChunkCounts[] = {1, 2, 3, 4, 6, 8, 12, 16};

// FLOPs of the first q prompt tokens over all blocks: linear layers plus causal attention.
double prompt_flops(double linear_per_token, double attention_per_pair, double q) {
  return q * linear_per_token + attention_per_pair * q * (q + 1) / 2;
}

}  // namespace

std::vector<PromptChunk> equal_flop_chunks(const ModelSpec& spec, int prompt_tokens, int n_chunks) {
  assert(n_chunks >= 1 && n_chunks <= prompt_tokens);
  double linear = 0;
  for (double f : spec.layer_flops_per_token) linear += f;
  const double attention = 4.0 * spec.n_head * spec.head_dim * spec.n_layers;
  const double total = prompt_flops(linear, attention, prompt_tokens);
  std::vector<PromptChunk> chunks;
  int start = 0;
  for (int k = 1; k <= n_chunks; ++k) {
    int end = prompt_tokens;
    if (k < n_chunks) {
      // Smallest end whose cumulative FLOPs reach k/K of the total, keeping >= 1 token per chunk.
      const double target = total * k / n_chunks;
      int lo = start + 1, hi = prompt_tokens - (n_chunks - k);
      while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (prompt_flops(linear, attention, mid) >= target) hi = mid;
        else lo = mid + 1;
      }
      end = lo;
    }
    chunks.push_back({end - start, start});
    start = end;
  }
  return chunks;
}

std::vector<PromptChunk> fixed_size_chunks(int prompt_tokens, int chunk_tokens) {
  std::vector<PromptChunk> chunks;
  for (int q = 0; q < prompt_tokens; q += chunk_tokens) chunks.push_back({std::min(chunk_tokens, prompt_tokens - q), q});
  return chunks;
}

CostModel::CostModel(const ModelSpec& spec, std::span<const DeviceProfile> devices, const LinkTable& links,
                     const PartitionOptions& options)
    : spec_(spec), devices_(devices.begin(), devices.end()), links_(links), options_(options) {
  const PartitionOptions& o = options_;
  decode_ctx_ = o.decode_ctx > 0 ? o.decode_ctx : o.ctx / 2.0;
  kv_token_layer_bytes_ = 2.0 * spec_.n_kv_head * spec_.head_dim * o.kv_bytes_per_elem;  // K and V
  attention_flops_per_pair_ = 4.0 * spec_.n_head * spec_.head_dim;                       // QK^T and AV
  activation_bytes_per_token_ = spec_.n_embd * o.activation_bytes_per_elem;
  kv_bytes_per_layer_ = kv_token_layer_bytes_ * double(o.ctx) * o.streams;

  // Working memory (§4.4), as runtime/model/stage.cpp allocates it for a stage with blocks and a
  // micro-batch of u tokens: f32 rows for the hidden state (x, normed x, residual tmp), q and
  // the attention output, k and v, and SwiGLU's gate and up; the matmul's quantized copy of its
  // input (one q8_0 and one q8_k row per token, ~34/32 + 292/256 bytes per element of the
  // widest input); and attention's scores: a row per head over the whole context for each of the
  // up to 8 tokens one pass attends together (Stage::kTokenBlock; not growing with u), with a
  // 32 KiB tile per head where the KV cache is not f32 (read back as f32). The LM-head stage keeps
  // one row of logits per stream; every stage double-buffers activation messages.
  const double u = o.prefill_chunk > 0 ? o.prefill_chunk : std::min(o.prompt_tokens, kDefaultUbatch);
  const double q_dim = double(spec_.n_head) * spec_.head_dim;
  const double kv_dim = double(spec_.n_kv_head) * spec_.head_dim;
  const double widest_input = std::max({double(spec_.n_embd), double(spec_.n_ff), q_dim});
  // A MoE block also keeps, per token, its router logits, the gathered input and output of one
  // expert, and each used expert's output until they are summed (runtime/model/expert_ffn.h).
  const double moe_row =
      spec_.n_expert > 0 ? double(spec_.n_expert) + (2.0 + spec_.n_expert_used) * spec_.n_embd + 2.0 * spec_.n_expert_used : 0.0;
  scratch_bytes_ = u * (3.0 * spec_.n_embd + 2 * q_dim + 2 * kv_dim + 2.0 * spec_.n_ff + moe_row) * kScratchElemBytes +
                   u * widest_input * (kQuantizedInputBytesPerElem + (spec_.weight_type == "f16" ? kF16InputBytesPerElem : 0.0)) +
                   double(spec_.n_head) * (kAttentionTokens * double(o.ctx) * kScratchElemBytes +
                                           (o.kv_bytes_per_elem < kScratchElemBytes ? kKvTileBytes : 0.0));
  logits_bytes_ = double(o.streams) * spec_.n_vocab * kScratchElemBytes;
  buffer_bytes_ = kMessageBuffers * u * activation_bytes_per_token_;

  for (const DeviceProfile& d : devices_) {
    weight_rate_.push_back(weight_read_rate(d, spec_.weight_type));
    kv_rate_.push_back(kv_read_rate(d));
    flop_rate_.push_back(d.prefill_flop_s);
    overhead_.push_back(d.step_overhead_s);
    storage_rate_.push_back(o.allow_paging ? d.storage_read_bytes_per_s : 0.0);
    // A MoE model's experts have no GPU shader yet: its blocks are planned on the CPU.
    const bool gpu = d.gpu && spec_.n_expert == 0 && gpu_shader_for(spec_.weight_type);
    gpu_budget_.push_back(gpu ? d.gpu->memory_bytes : 0.0);
    gpu_weight_rate_.push_back(gpu ? weight_read_rate(*d.gpu, spec_.weight_type) : 0.0);
    gpu_flop_rate_.push_back(gpu ? d.gpu->prefill_flop_s : 0.0);
    gpu_overhead_.push_back(gpu ? d.gpu->layer_overhead_s : 0.0);
  }
  for (double b : spec_.layer_weight_bytes) widest_layer_bytes_ = std::max(widest_layer_bytes_, b);
  weight_prefix_.assign(spec_.n_layers + 1, 0.0);
  for (int l = 0; l < spec_.n_layers; ++l) weight_prefix_[l + 1] = weight_prefix_[l] + spec_.layer_weight_bytes[l];
  // A recurrent layer holds its fixed state per stream instead of a KV cache (twice when the
  // launch drafts: the checkpoint before a draft); a shared-KV layer holds neither.
  // A sliding-window layer keeps a ring of its latest positions (kv_cache_rows).
  kv_prefix_.assign(spec_.n_layers + 1, 0.0);
  const bool states = spec_.layer_state_bytes.size() == static_cast<size_t>(spec_.n_layers);
  const bool shares = spec_.layer_shares_kv.size() == static_cast<size_t>(spec_.n_layers);
  for (int l = 0; l < spec_.n_layers; ++l) {
    const double state = states ? spec_.layer_state_bytes[static_cast<size_t>(l)] : 0.0;
    const double rows = kv_cache_rows(layer_window(l), o.ctx, o.max_batch);
    const double kv = shares && spec_.layer_shares_kv[static_cast<size_t>(l)] ? 0.0 : kv_token_layer_bytes_ * rows * o.streams;
    kv_prefix_[l + 1] = kv_prefix_[l] + (state > 0 ? state * o.streams * (o.drafts ? 2 : 1) : kv);
  }

  build_decode_tables();
  build_prefill_tables();
  build_links();
}

int CostModel::micro_batch_index(int m) const {
  for (size_t i = 0; i < micro_batches_.size(); ++i)
    if (micro_batches_[i] == m) return static_cast<int>(i);
  return -1;
}

int CostModel::throughput_streams(int mi) const {
  const int m = micro_batches_[static_cast<size_t>(mi)];
  const int s = m / latency_rows();
  return m % latency_rows() == 0 && s <= std::max(1, options_.streams) ? s : 0;
}

// Per-block roofline of §4.2: weights (and the KV rows read by attention) stream at
// the device's decode rate, or the step is compute-bound, whichever is slower.
double CostModel::layer_decode_time(int d, int layer, int m) const {
  const int window = layer_window(layer);  // a sliding layer reads its window's keys, not the context's
  const double keys = window > 0 ? std::min(decode_ctx_, double(window)) : decode_ctx_;
  const double bytes_time = layer_read_bytes(spec_, layer, m) / weight_rate_[d] + m * keys * kv_token_layer_bytes_ / kv_rate_[d];
  const double flops = m * (spec_.layer_flops_per_token[layer] + attention_flops_per_pair_ * keys);
  return std::max(bytes_time, flops / flop_rate_[d]);
}

double CostModel::gpu_layer_decode_time(int d, int layer, int m) const {
  const int window = layer_window(layer);
  const double keys = window > 0 ? std::min(decode_ctx_, double(window)) : decode_ctx_;
  const double products = std::max(layer_read_bytes(spec_, layer, m) / gpu_weight_rate_[d],
                                   m * spec_.layer_flops_per_token[layer] / gpu_flop_rate_[d]);
  const double attention =
      std::max(m * keys * kv_token_layer_bytes_ / kv_rate_[d], m * attention_flops_per_pair_ * keys / flop_rate_[d]);
  return products + attention + gpu_overhead_[d];
}

double CostModel::gpu_layer_prefill_time(int d, int layer, const PromptChunk& c) const {
  const double p = c.tokens, q = c.offset;
  const double products = std::max(layer_read_bytes(spec_, layer, p) / gpu_weight_rate_[d],
                                   p * spec_.layer_flops_per_token[layer] / gpu_flop_rate_[d]);
  const double attention = std::max((q + p) * kv_token_layer_bytes_ / kv_rate_[d],
                                    attention_flops_per_pair_ * (p * q + p * (p + 1) / 2) / flop_rate_[d]);
  return products + attention + gpu_overhead_[d];
}

double CostModel::gpu_output_time(int d, int m) const {
  return std::max(spec_.output_bytes / gpu_weight_rate_[d], m * spec_.output_flops_per_token / gpu_flop_rate_[d]) +
         gpu_overhead_[d];
}

CostModel::GpuShare CostModel::gpu_share(int d, int first, int last, bool with_output) const {
  const GpuShare none{first, false};
  const double budget = gpu_budget_[d];
  if (budget <= 0) return none;
  // The largest g with the weights of [first, g) within the budget (weight_prefix_ ascends).
  const auto begin = weight_prefix_.begin() + first, end = weight_prefix_.begin() + last + 1;
  const auto past = std::upper_bound(begin, end, weight_prefix_[first] + budget);
  GpuShare share{static_cast<int>(past - weight_prefix_.begin()) - 1, false};
  share.output = with_output && share.end == last && weight_prefix_[last] - weight_prefix_[first] + spec_.output_bytes <= budget;
  if (share.end == first && !share.output) return none;
  const bool fits_ram = memory_with(d, first, last, first == 0, with_output, share).total() <= devices_[d].usable_memory_bytes;
  return fits_ram ? share : none;
}

double CostModel::layer_prefill_time(int d, int layer, const PromptChunk& c) const {
  const double p = c.tokens, q = c.offset;
  const double bytes_time = layer_read_bytes(spec_, layer, p) / weight_rate_[d] + (q + p) * kv_token_layer_bytes_ / kv_rate_[d];
  const double flops = p * spec_.layer_flops_per_token[layer] + attention_flops_per_pair_ * (p * q + p * (p + 1) / 2);
  return std::max(bytes_time, flops / flop_rate_[d]);
}

double CostModel::output_time(int d, int m) const {
  return std::max(spec_.output_bytes / weight_rate_[d], m * spec_.output_flops_per_token / flop_rate_[d]);
}

double CostModel::decode_time(int d, int first, int last, bool with_output, int m) const {
  const int mi = micro_batch_index(m);
  if (mi >= 0) return decode_time_at(mi, d, first, last, with_output);
  return overhead_[d] + with_paging(d, first, last, with_output, decode_compute_time(d, first, last, with_output, m));
}

double CostModel::decode_compute_time(int d, int first, int last, bool with_output, int m) const {
  const int mi = micro_batch_index(m);
  if (mi >= 0) return decode_compute_at(mi, d, first, last, with_output);
  const GpuShare g = gpu_share(d, first, last, with_output);
  double t = 0;
  for (int l = first; l < last; ++l) t += l < g.end ? gpu_layer_decode_time(d, l, m) : layer_decode_time(d, l, m);
  if (with_output) t += g.output ? gpu_output_time(d, m) : output_time(d, m);
  return t;
}

void CostModel::build_decode_tables() {
  const int b = std::max(1, options_.streams);
  // A step holds at most max_batch rows: the scheduler packs no more streams' passes into one.
  const int most_streams = std::max(1, options_.max_batch / latency_rows());
  for (int g = 1; g <= std::min(b, kMaxMicroBatches); ++g)
    micro_batches_.push_back(std::min((b + g - 1) / g, most_streams) * latency_rows());
  // m = 1 (one stream's latency, micro_batch_index(1)) even when B > kMaxMicroBatches stops the
  // loop above at ceil(B / 16) >= 2: without it index -1 was read (head crash at --streams 17).
  micro_batches_.push_back(1);
  micro_batches_.push_back(latency_rows());
  std::sort(micro_batches_.begin(), micro_batches_.end());
  micro_batches_.erase(std::unique(micro_batches_.begin(), micro_batches_.end()), micro_batches_.end());
  for (int m : micro_batches_) {
    std::vector<std::vector<double>> per_device, gpu_per_device;
    std::vector<double> outputs, gpu_outputs;
    for (int d = 0; d < n_devices(); ++d) {
      std::vector<double> prefix(spec_.n_layers + 1, 0.0);
      std::vector<double> on_gpu(spec_.n_layers + 1, 0.0);
      for (int l = 0; l < spec_.n_layers; ++l) {
        prefix[l + 1] = prefix[l] + layer_decode_time(d, l, m);
        if (gpu_budget_[d] > 0) on_gpu[l + 1] = on_gpu[l] + gpu_layer_decode_time(d, l, m);
      }
      per_device.push_back(std::move(prefix));
      gpu_per_device.push_back(std::move(on_gpu));
      outputs.push_back(output_time(d, m));
      gpu_outputs.push_back(gpu_budget_[d] > 0 ? gpu_output_time(d, m) : 0.0);
    }
    decode_prefix_.push_back(std::move(per_device));
    output_time_.push_back(std::move(outputs));
    gpu_decode_prefix_.push_back(std::move(gpu_per_device));
    gpu_output_time_.push_back(std::move(gpu_outputs));
  }
}

void CostModel::build_prefill_tables() {
  const int p = std::max(1, options_.prompt_tokens);
  if (options_.prefill_chunk > 0) {
    schedules_.push_back(fixed_size_chunks(p, options_.prefill_chunk));
  } else {
    for (int k : kChunkCounts)
      if (k <= p) schedules_.push_back(equal_flop_chunks(spec_, p, k));
  }
  for (const std::vector<PromptChunk>& schedule : schedules_) {
    std::vector<std::vector<std::vector<double>>> per_chunk, gpu_per_chunk;
    for (const PromptChunk& chunk : schedule) {
      std::vector<std::vector<double>> per_device, gpu_per_device;
      for (int d = 0; d < n_devices(); ++d) {
        std::vector<double> prefix(spec_.n_layers + 1, 0.0), on_gpu(spec_.n_layers + 1, 0.0);
        for (int l = 0; l < spec_.n_layers; ++l) {
          prefix[l + 1] = prefix[l] + layer_prefill_time(d, l, chunk);
          if (gpu_budget_[d] > 0) on_gpu[l + 1] = on_gpu[l] + gpu_layer_prefill_time(d, l, chunk);
        }
        per_device.push_back(std::move(prefix));
        gpu_per_device.push_back(std::move(on_gpu));
      }
      per_chunk.push_back(std::move(per_device));
      gpu_per_chunk.push_back(std::move(gpu_per_device));
    }
    prefill_prefix_.push_back(std::move(per_chunk));
    gpu_prefill_prefix_.push_back(std::move(gpu_per_chunk));
  }
}

void CostModel::build_links() {
  const int n = n_devices();
  hop_width_.assign(spec_.n_layers + 1, 1.0);
  if (spec_.n_embd_per_layer > 0)
    for (int b = 0; b <= spec_.n_layers; ++b)
      hop_width_[b] = (spec_.n_embd + double(spec_.n_layers - b) * spec_.n_embd_per_layer) / spec_.n_embd;
  latency_.assign(n * n, 0.0);
  inv_bandwidth_.assign(n * n, 0.0);
  hop_bytes_per_token_.assign(n * n, activation_bytes_per_token_);
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      if (a == b) continue;
      const Link link = links_.between(a, b);
      latency_[a * n + b] = link.latency_s;
      inv_bandwidth_[a * n + b] = 1.0 / link.bandwidth_bytes_per_s;
      if (link.bandwidth_bytes_per_s < options_.compress_below_bytes_per_s)
        hop_bytes_per_token_[a * n + b] = spec_.n_embd * options_.compressed_bytes_per_elem;
    }
  }
}

double CostModel::paged_bytes(int d, int first, int last, bool with_embedding, bool with_output) const {
  if (storage_rate_[d] <= 0 || last <= first) return 0;
  const double excess = memory(d, first, last, with_embedding, with_output).total() - devices_[d].usable_memory_bytes;
  return excess > 0 ? excess + 2 * widest_layer_bytes_ : 0;
}

MemoryUse CostModel::memory(int d, int first, int last, bool with_embedding, bool with_output) const {
  return memory_with(d, first, last, with_embedding, with_output, gpu_share(d, first, last, with_output));
}

MemoryUse CostModel::memory_with(int d, int first, int last, bool with_embedding, bool with_output, GpuShare share) const {
  MemoryUse use;
  use.weight_bytes = weight_prefix_[last] - weight_prefix_[first];
  if (with_embedding) use.weight_bytes += spec_.embedding_bytes + spec_.per_layer_input_bytes;
  // A tied LM head on the head device reuses the embedding table it already holds.
  const bool shared = with_output && with_embedding && spec_.tied_embeddings;
  if (with_output) use.weight_bytes += shared ? spec_.output_bytes - spec_.embedding_bytes : spec_.output_bytes;
  // The GPU's copies; on a graphics card RAM no longer holds them (but the embedding table a
  // tied head shares, which the CPU still reads), on unified memory it holds them still.
  const int g = share.end;
  const bool output_on_gpu = share.output;
  use.gpu_weight_bytes = weight_prefix_[g] - weight_prefix_[first] + (output_on_gpu ? spec_.output_bytes : 0.0);
  if (use.gpu_weight_bytes > 0 && !devices_[d].gpu->unified_memory)
    use.off_ram_bytes = weight_prefix_[g] - weight_prefix_[first] + (output_on_gpu && !shared ? spec_.output_bytes : 0.0);
  use.kv_bytes = kv_prefix_[last] - kv_prefix_[first];
  use.work_bytes =
      buffer_bytes_ * hop_width_[first] + (last > first ? scratch_bytes_ : 0.0) + (with_output ? logits_bytes_ : 0.0);
  return use;
}

}  // namespace hearth::partitioner
