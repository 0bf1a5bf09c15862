// Reference logits from llama.cpp b10573 for tests/random_arch_test.cpp (README.md here): a prompt, 24 greedy ids
// decoded one at a time, then every position of both in one batch. Built against llama.cpp, not by this repository.
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <string>
int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "dump MODEL OUT.f32 N_GREEDY id...\n");
    return 2;
  }
  llama_backend_init();
  auto mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* m = llama_model_load_from_file(argv[1], mp);
  if (!m) return 1;
  auto cp = llama_context_default_params();
  cp.n_ctx = 512;
  cp.n_batch = 512;
  cp.n_ubatch = 512;
  cp.n_threads = 1;
  cp.n_threads_batch = 1;
  cp.n_ctx = 256;
  cp.n_batch = 256;
  cp.n_ubatch = 256;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(m, cp);
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m));
  std::vector<llama_token> ids;
  for (int i = 4; i < argc; ++i) ids.push_back(atoi(argv[i]));
  llama_batch b = llama_batch_init(512, 0, 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    b.token[i] = ids[i];
    b.pos[i] = i;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = 0;
    b.logits[i] = 1;
  }
  b.n_tokens = ids.size();
  if (llama_decode(ctx, b)) return 1;
  FILE* f = fopen(argv[2], "wb");
  int last = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const float* l = llama_get_logits_ith(ctx, i);
    fwrite(l, 4, n_vocab, f);
    int best = 0;
    for (int v = 1; v < n_vocab; ++v)
      if (l[v] > l[best]) best = v;
    last = best;
  }
  fclose(f);
  std::vector<llama_token> greedy;
  int n_greedy = atoi(argv[3]);
  int pos = ids.size();
  printf("greedy:");
  for (int g = 0; g < n_greedy; ++g) {
    printf(" %d", last);
    greedy.push_back(last);
    b.n_tokens = 1;
    b.token[0] = last;
    b.pos[0] = pos++;
    b.n_seq_id[0] = 1;
    b.seq_id[0][0] = 0;
    b.logits[0] = 1;
    if (llama_decode(ctx, b)) return 1;
    const float* l = llama_get_logits_ith(ctx, 0);
    int best = 0;
    for (int v = 1; v < n_vocab; ++v)
      if (l[v] > l[best]) best = v;
    last = best;
  }
  printf("\n");
  // All of prompt + greedy in one batch, every position's logits (the fixtures' layout).
  llama_memory_clear(llama_get_memory(ctx), true);
  std::vector<llama_token> all = ids;
  all.insert(all.end(), greedy.begin(), greedy.end());
  for (size_t i = 0; i < all.size(); ++i) {
    b.token[i] = all[i];
    b.pos[i] = i;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = 0;
    b.logits[i] = 1;
  }
  b.n_tokens = all.size();
  if (llama_decode(ctx, b)) return 1;
  FILE* f2 = fopen(argv[2], "wb");
  for (size_t i = 0; i < all.size(); ++i) fwrite(llama_get_logits_ith(ctx, i), 4, n_vocab, f2);
  fclose(f2);
  llama_batch_free(b);
  llama_free(ctx);
  llama_model_free(m);
  return 0;
}
