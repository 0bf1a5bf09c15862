// The model library as the head reports it: every GGUF file of its models directories, with what
// a launch of it would take on the devices up now (hearth models, GET /v1/models, the page's
// picker).
#include <filesystem>

#include "cluster/head.h"
#include "runtime/model/kv_rows.h"

namespace hearth::cluster {

namespace wire = transport::wire;

void Head::on_models(const std::string& client, uint64_t request_id) {
  const std::vector<LibraryModel>& models = library_.scan();
  const std::vector<const Device*> devices = registry_.candidates({});
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Envelope>();
  env.setRequestId(request_id);
  auto reply = env.initModelsReply();
  auto dirs = reply.initDirs(static_cast<unsigned>(library_.dirs().size()));
  for (unsigned i = 0; i < dirs.size(); ++i) dirs.set(i, library_.dirs()[i]);
  auto list = reply.initModels(static_cast<unsigned>(models.size()));
  for (unsigned i = 0; i < list.size(); ++i) fill_library_model(models[i], devices, list[i]);
  ports_.outbox.send(client, b);
}

namespace {

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return a == b || std::filesystem::equivalent(a, b, ec);
}

}  // namespace

// Planned as `hearth launch -m ID` with no sizes would plan it: the model's context (at most
// 4096), 4 streams, an f16 KV cache, and the smaller sizes a launch falls back to.
void Head::fill_library_model(const LibraryModel& m, const std::vector<const Device*>& devices,
                              wire::LibraryModel::Builder out) const {
  out.setId(m.id);
  out.setPath(m.path);
  out.setName(m.name);
  out.setArch(m.arch);
  out.setFileBytes(m.file_bytes);
  out.setWeightType(m.weight_type);
  out.setNLayers(static_cast<uint32_t>(m.n_layers));
  out.setLoaded((plan_ && same_file(plan_->model_path, m.path)) || (next_ && same_file(next_->model_path, m.path)));
  if (!m.spec) {
    out.setWhy("cannot be read: " + m.error);
    return;
  }
  partitioner::PartitionOptions o;
  o.kv_bytes_per_elem = runtime::kv_bytes_per_element(runtime::TensorType::F16);
  std::string why;
  for (const auto& [ctx, streams] : fallback_sizes(std::min(m.n_ctx_train > 0 ? m.n_ctx_train : 4096, 4096), 4)) {
    o.ctx = ctx;
    o.streams = streams;
    try {
      const partitioner::PartitionPlan plan = plan_by_planner(*m.spec, devices, registry_.link_table(devices), o);
      out.setFits(true);
      auto names = out.initDevices(static_cast<unsigned>(plan.stages.size()));
      for (unsigned i = 0; i < names.size(); ++i)
        names.set(i, devices[static_cast<size_t>(plan.stages[i].device)]->profile.name);
      out.setPredictedTokensPerS(plan.predicted.ms_per_token > 0 ? 1e3 / plan.predicted.ms_per_token : 0);
      out.setNCtx(static_cast<uint32_t>(ctx));
      out.setStreams(static_cast<uint32_t>(streams));
      return;
    } catch (const Failure& f) {
      if (why.empty()) why = f.what();
    }
  }
  out.setWhy(why);
}

}  // namespace hearth::cluster
