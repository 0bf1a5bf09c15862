#include "tests/test_util.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <cstring>
#include <random>
#include <stdexcept>

namespace hearth::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("hearth-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::optional<fs::path> shared_dir() {
  const char* env = std::getenv("HEARTH_SHARED_DIR");
  fs::path p = env ? fs::path(env) : fs::path(HEARTH_SHARED_DIR);
  if (fs::is_directory(p)) return fs::canonical(p);
  return std::nullopt;
}

std::optional<std::string> shared_file(const std::string& relative) {
  auto dir = shared_dir();
  if (!dir || !fs::exists(*dir / relative)) {
    MESSAGE("SKIPPED: shared reference data '" << relative << "' is absent (set HEARTH_SHARED_DIR to the shared/ folder)");
    return std::nullopt;
  }
  return (*dir / relative).string();
}

runtime::MakeModelOptions superblock_model(runtime::TensorType t, int n_layer) {
  runtime::MakeModelOptions o;
  o.type = t;
  o.shape.n_embd = 256;
  o.shape.n_head = 4;
  o.shape.n_head_kv = 2;
  o.shape.n_ff = 512;
  o.shape.n_layer = n_layer;
  o.weight_std = 0.05f;
  return o;
}

std::string make_model(const TempDir& dir, const std::string& name, runtime::MakeModelOptions options) {
  const std::string path = dir.file(name);
  if (options.threads == 0) options.threads = 2;
  runtime::make_random_model(path, options);
  return path;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<float> read_f32(const std::string& path) {
  const auto b = read_bytes(path);
  std::vector<float> out(b.size() / 4);
  std::memcpy(out.data(), b.data(), out.size() * 4);
  return out;
}

namespace {

std::string slurp_fd(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return s;
}

}  // namespace

CommandResult run_cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv{HEARTH_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv);
}

CommandResult run_command(const std::vector<std::string>& command) {
  // stderr goes to a file so that neither pipe can fill up and block the child.
  TempDir tmp;
  const std::string err_path = tmp.file("stderr");
  int out_pipe[2];
  if (::pipe(out_pipe) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    std::FILE* err = std::fopen(err_path.c_str(), "w");
    if (err) ::dup2(::fileno(err), 2);
    std::vector<std::string> copy = command;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  CommandResult r{};
  r.out = slurp_fd(out_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream ef(err_path);
  r.err.assign(std::istreambuf_iterator<char>(ef), {});
  return r;
}

}  // namespace hearth::test

#include "runtime/format/gguf_writer.h"
#include "runtime/format/mapped_file.h"

namespace hearth::test {

void rewrite_gguf(const std::string& src, const std::string& dst,
                  const std::function<void(runtime::GgufMetadata&, std::vector<runtime::GgufTensorInfo>&)>& mutate) {
  const runtime::GgufFile in = runtime::GgufFile::open(src);
  runtime::GgufMetadata md = in.metadata();
  std::vector<runtime::GgufTensorInfo> tensors = in.tensors();
  mutate(md, tensors);
  runtime::GgufWriter w(static_cast<uint32_t>(in.alignment()));
  for (const auto& [k, v] : md.all()) w.metadata().set(k, v);
  for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.shape);
  const runtime::MappedRegion bytes(src, 0, runtime::file_size(src));
  w.write(dst, [&](size_t i, std::span<uint8_t> out) {
    const runtime::GgufTensorInfo* orig = in.find_tensor(w.tensors()[i].name);
    if (orig && orig->n_bytes == out.size()) std::memcpy(out.data(), bytes.data() + orig->offset, out.size());
  });
}

WholeModel open_whole_model(const std::string& path) {
  runtime::GgufFile f = runtime::GgufFile::open(path);
  runtime::ModelConfig c = runtime::read_model_config(f);
  auto w = std::make_shared<runtime::StageWeights>(f, c, runtime::StageSpec::whole(c.n_layer));
  return {std::move(f), std::move(c), std::move(w)};
}

}  // namespace hearth::test
