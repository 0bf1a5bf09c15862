@0x8a05d4a77dac926a;
# The wire protocol of hearth: every message between daemons, and between the `hearth` CLI and
# the head, is an Envelope. A message is one ZeroMQ frame holding a flat (single-segment) Cap'n
# Proto message; bulk bytes (activations, weight chunks) travel in a second, raw frame next to it,
# never as Cap'n Proto lists.
#
# Architecture-neutral: Cap'n Proto encodes integers and floats little-endian on every platform,
# and raw payloads are little-endian f32 (or the dtype named in the header), so x86-64 and ARM64
# daemons interoperate. Big-endian hosts are not supported: the daemons copy raw payloads to and
# from memory in host order, which is this order on every supported host (x86-64, AArch64 Linux
# and Android), and transport/codec.h refuses to compile for any other. tests/mixed_arch_test.cpp
# checks it: an arm64 hearthd under qemu-aarch64 as one stage among x86-64 stages generates what
# one device generates.
#
# Evolution: append fields and union members only; never renumber or reuse an ordinal. A peer
# whose Hello carries another protocolVersion is refused with a VERSION_MISMATCH error that says
# both versions.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hearth::wire");

# 2: errors carry an ErrorCategory.
# 6: a hop may carry activations as f16 or q8_0 (Forward.dtype, Assignment.wireType).
# 7: a chunk may end in a draft the last stage checks (SeqChunk.drafts, SeqToken.accepted); an
#    older last stage would sample after the draft as if it were accepted.
const protocolVersion :UInt16 = 7;

# What kind of failure an error is, chosen where it arises. Only the edges turn it into something
# else: the HTTP gateway into a status code, the CLI into an exit code.
enum ErrorCategory {
  internal @0;                # a bug or an unexpected state on our side
  badRequest @1;              # the request itself is wrong (a malformed split, an unknown role)
  notFound @2;                # it names something that is not there (a model file, a device)
  noCapacity @3;              # the devices cannot hold it (a model, a context)
  lostDevice @4;              # a device of the plan stopped responding
  unauthorized @5;            # a key that is not the one this identity registered with
  conflict @6;                # it clashes with the current state (a launch in progress, a taken name)
  unavailable @7;             # not now: no model loaded, still loading, unloaded meanwhile
  versionMismatch @8;         # the peer speaks another protocolVersion
  tooLarge @9;                # a prompt longer than the context
}

# ---- identity and health ----

struct TypeThroughput {
  type @0 :Text;              # GGUF weight type name: "f32", "q4_0", ...
  bytesPerS @1 :Float64;      # bytes of weights a decode matvec streams per second
}

struct DeviceProfile {
  name @0 :Text;
  usableMemoryBytes @1 :UInt64;
  memoryBandwidthBytesPerS @2 :Float64;
  decode @3 :List(TypeThroughput);
  prefillFlopS @4 :Float64;
  stepOverheadS @5 :Float64;
  cores @6 :UInt32;
  cpu @7 :Text;
  os @8 :Text;
  arch @9 :Text;              # "x86_64", "aarch64"
  # Behind usableMemoryBytes: the memory it is taken from, and what is held back from it, why.
  memoryBasis @10 :Text;      # "--memory-limit", "the cgroup's limit", "available memory"
  memoryBasisBytes @11 :UInt64;
  memoryHeldBackBytes @12 :UInt64;
  memoryHeldBackWhy @13 :Text;
  # The data directory's storage (paging, issue 19): cold sequential read rate and free bytes;
  # 0 = not measured.
  storageReadBytesPerS @14 :Float64;
  storageFreeBytes @15 :UInt64;
  # The GPU its stages use (hearthd --gpu), measured; absent without one.
  gpu @16 :GpuProfile;
}

struct GpuProfile {
  name @0 :Text;
  memoryBytes @1 :UInt64;     # weight bytes it may hold (its memory less the runtime's margin)
  unifiedMemory @2 :Bool;     # shares the device's RAM (an integrated GPU)
  memoryBandwidthBytesPerS @3 :Float64;
  decode @4 :List(TypeThroughput);
  prefillFlopS @5 :Float64;
  layerOverheadS @6 :Float64; # per layer and step: its products' submissions
}

struct Hello {
  protocolVersion @0 :UInt16;
  nodeId @1 :Text;            # stable per data directory
  controlEndpoint @2 :Text;   # tcp://host:port of this node's ROUTER
  dataEndpoint @3 :Text;      # tcp://host:port of this node's PULL (activations in)
  profile @4 :DeviceProfile;
  incarnation @5 :UInt64;     # random per process start: a restarted daemon is a new incarnation
}

# The head asks a device it does not know (it restarted) to register again.
struct HelloRequest {}

struct HelloAck {
  headId @0 :Text;
  memberKeys @1 :List(Text);  # CURVE public keys of the cluster's devices: whom to admit
}

# ---- pairing (on the head's pairing socket, CURVE-encrypted to the head's key) ----

struct PairRequest {
  nodeId @0 :Text;
  secret @1 :Text;            # the join token's secret
}

struct PairReply {
  ok @0 :Bool;
  message @1 :Text;
}

struct Heartbeat {
  nodeId @0 :Text;
  planId @1 :UInt64;          # plan this node has loaded, 0 if none
  dropped @2 :UInt64;         # messages this node refused so far (malformed, out of plan, ...)
  residentBytes @3 :UInt64;   # its RSS
  # What its stage did since the daemon started (counters; the head shows them per stage).
  batches @4 :UInt64;
  tokens @5 :UInt64;
  computeNs @6 :UInt64;       # time spent computing batches
  bytesOut @7 :UInt64;        # activation bytes pushed to the next stage
  refusedHandshakes @8 :UInt64;  # connections its ZAP handler refused (unpaired keys)
  incarnation @9 :UInt64;     # as in its Hello: heartbeats of another incarnation wait for its Hello
  # Of those, the decode steps of one token of one stream and their compute time: what the head
  # compares with the plan's stage time when decoding is slow.
  decodeSteps @10 :UInt64;
  decodeNs @11 :UInt64;
  # A paging stage's reads from storage (issue 19): bytes, time in reads, and the compute's time
  # waiting for a layer.
  pagedReadBytes @12 :UInt64;
  pagedReadNs @13 :UInt64;
  pagedWaitNs @14 :UInt64;
  # Of the batches, the decode steps of more than one row (a draft's, several streams'): their
  # rows and compute time (a launch that drafts every step, or serves several conversations at
  # once, may have no one-token steps to compare with the plan).
  batchedSteps @15 :UInt64;
  batchedRows @16 :UInt64;
  batchedNs @17 :UInt64;
  # The plan's time for those decode steps and for the batched ones (Assignment.stepPlan), added
  # up step by step.
  decodePlannedNs @18 :UInt64;
  batchedPlannedNs @19 :UInt64;
}

# ---- loading a stage ----

# What a stage's KV cache stores (runtime/model/kv_rows.h).
enum KvType {
  unset @0;                   # in a LaunchRequest: the head's default (f16); never in an Assignment
  f32 @1;
  f16 @2;
  q80 @3;                     # q8_0: heads of a multiple of 32 elements
}

struct StepPoint {
  rows @0 :Float64;
  ms @1 :Float64;
}

struct Assignment {
  planId @0 :UInt64;          # every later message of this plan carries it
  modelHash @1 :UInt64;       # XXH3-64 of the whole source GGUF
  modelName @2 :Text;
  firstLayer @3 :UInt32;
  lastLayer @4 :UInt32;       # exclusive
  hasEmbedding @5 :Bool;
  hasOutput @6 :Bool;
  stageFileBytes @7 :UInt64;  # size of the GGUF of this stage's tensors, streamed by chunks
  stageFileHash @8 :UInt64;   # XXH3-64 of that file's header: names the cached copy
  nextEndpoint @9 :Text;      # where this stage pushes its output (next stage, or the head)
  nCtx @10 :UInt32;
  maxBatch @11 :UInt32;
  maxSequences @12 :UInt32;
  nEmbd @13 :UInt32;
  nextKey @14 :Text;          # CURVE public key of whoever listens at nextEndpoint
  memberKeys @15 :List(Text); # keys of the plan's devices: who may push into this stage
  # A launch beside a serving model: receive the weights, report `staged`, and keep serving the
  # current stage until a Commit for this plan says to load it. False for a re-plan after a lost
  # device (nothing serves then): load as soon as the weights are here.
  staged @16 :Bool;
  kvType @17 :KvType;
  wireType @18 :Forward.DType; # how this stage's output hop carries activations
  drafts @19 :Bool;           # the launch drafts: a stage's recurrent layers keep a second state
                              # per sequence (the checkpoint before a draft), so its memory counts it
  # What the plan expects of a decode step of this stage by its rows: points (rows ascending, the
  # first at one row), linear between them and along the last piece past them (cluster/drift.h).
  stepPlan @20 :List(StepPoint);
}

# Every device of a staged plan has its weights: drop the old stage, load this plan's.
struct Commit {
  planId @0 :UInt64;
}

struct WeightRequest {
  planId @0 :UInt64;
  offset @1 :UInt64;          # byte offset in the stage file
  length @2 :UInt32;
}

# Followed by a raw frame of the chunk's bytes.
struct WeightChunk {
  planId @0 :UInt64;
  offset @1 :UInt64;
  checksum @2 :UInt64;        # XXH3-64 of the raw frame
}

struct LoadStatus {
  planId @0 :UInt64;
  state @1 :State;
  bytesDone @2 :UInt64;
  bytesTotal @3 :UInt64;
  message @4 :Text;
  residentBytes @5 :UInt64;   # the daemon's RSS once loaded

  enum State {
    receiving @0;
    loading @1;
    ready @2;
    failed @3;
    staged @4;                # a staged assignment's weights are all here; waiting for Commit
  }
}

# ---- the pipeline ----

struct SamplingParams {
  temperature @0 :Float32;
  topK @1 :Int32;
  topP @2 :Float32;
  minP @3 :Float32;
  repeatPenalty @4 :Float32;
  repeatLastN @5 :Int32;
  seed @6 :UInt64;
  drawsDone @7 :UInt64;       # random draws already made for this sequence (a replay skips them)
}

struct SeqChunk {
  seq @0 :UInt64;
  pos @1 :UInt32;             # position of the chunk's first token
  nTokens @2 :UInt32;
  isPrompt @3 :Bool;          # prompt tokens count for the repetition penalty of the sampler
  wantToken @4 :Bool;         # the last stage samples after this chunk (false for a prompt's
                              # earlier chunks)
  sampling @5 :SamplingParams; # read when the request starts (pos == 0, or restarts)
  restarts @6 :Bool;          # the first chunk of a request that continues the sequence's kept
                              # caches from pos > 0: the last stage starts a new sampler
  drafts @7 :UInt32;          # speculative decoding: the chunk's last `drafts` tokens are a draft
                              # the last stage checks (less than nTokens; wantToken set); a stage's
                              # recurrent layers keep their state from before the draft, and the
                              # sequence's next chunk may start there (pos = this pos + nTokens - drafts)
}

# Followed by a raw frame: [sum(nTokens) x nEmbd] values of `dtype`, little-endian, row-major
# (IEEE-754 binary32 for f32: the same bits on x86-64 and ARM64, no conversion on either).
struct Forward {
  planId @0 :UInt64;
  chunks @1 :List(SeqChunk);
  tokens @2 :List(Int32);     # ids of every token of the batch, in order
  dtype @3 :DType;
  nEmbd @4 :UInt32;           # values per row: the model's n_embd, plus (Gemma 4 E2B/E4B) the
                              # per-layer inputs of the layers after the sender's stage
  enum DType {
    f32 @0;
    f16 @1;                   # IEEE-754 binary16
    q80 @2;                   # each row as nEmbd/32 q8_0 blocks (f16 scale, 32 x int8)
  }
}

struct SeqToken {
  seq @0 :UInt64;
  token @1 :Int32;            # the last stage's own token
  accepted @2 :UInt32;        # draft tokens of the chunk it accepted; they come before `token`
}

struct Result {
  planId @0 :UInt64;
  tokens @1 :List(SeqToken);
}

struct Release {
  planId @0 :UInt64;
  seqs @1 :List(UInt64);
}

struct Error {
  planId @0 :UInt64;
  seqs @1 :List(UInt64);      # sequences the error fails, if any
  message @2 :Text;
  category @3 :ErrorCategory;
}

# ---- links ----

struct ProbeTarget {
  nodeId @0 :Text;
  controlEndpoint @1 :Text;
  publicKey @2 :Text;         # its CURVE key; the prober also admits it (it probes back)
}

struct LinkProbe {
  targets @0 :List(ProbeTarget);
}

# Followed, for bandwidth probes, by a raw frame of padding bytes.
struct Ping {
  sentNs @0 :UInt64;
}

struct Pong {
  sentNs @0 :UInt64;
}

struct LinkMeasure {
  from @0 :Text;
  to @1 :Text;
  latencyS @2 :Float64;       # one way: half the median round trip of a small message
  bandwidthBytesPerS @3 :Float64;
}

struct LinkReport {
  links @0 :List(LinkMeasure);
}

# ---- the controller CLI and the head ----

struct DeviceInfo {
  nodeId @0 :Text;
  controlEndpoint @1 :Text;
  profile @2 :DeviceProfile;
  alive @3 :Bool;
  isHead @4 :Bool;
  lastSeenMs @5 :UInt64;      # ms since the head last heard from it
  dataEndpoint @6 :Text;
  storageFromPaging @7 :Bool; # profile's storage figure is the rate its paging sustained, not its probe's
}

struct DevicesRequest {}

struct DevicesReply {
  devices @0 :List(DeviceInfo);
}

struct LaunchRequest {
  modelPath @0 :Text;         # path of the GGUF on the head
  objective @1 :Text;         # latency | throughput | ttft
  ctx @2 :UInt32;
  devices @3 :List(Text);     # candidate device names; empty = all
  split @4 :Text;             # "head:2,a:2,b:1" sets devices, order and layer counts by hand
  streams @5 :UInt32;
  kvType @6 :KvType;
  wireType @7 :WireType;
  draft @8 :Text;             # speculative decoding's drafts: "" or none, ngram, oracle:FILE
  draftMax @9 :UInt32;        # the most tokens one draft holds (0: the default, 8)
}

# How the hops between stages carry activations (cluster/activation_codec.h).
enum WireType {
  f32 @0;                     # bit-exact: what one device computes
  f16 @1;                     # half the bytes
  q80 @2;                     # q8_0 rows: 34 bytes per 32 values, 27% of f32
  auto @3;                    # the head chooses per hop: f16 on the links the planner finds slow
}

# A launch's progress: first the plan (before any weights move), then each device's transfer.
struct LaunchProgress {
  device @0 :Text;
  bytesDone @1 :UInt64;
  bytesTotal @2 :UInt64;
  state @3 :Text;
  plan @4 :PlanReport;        # set in the first message only
}

# One stage of a launched plan: what the planner gave it and how it is doing. Bytes, seconds,
# bytes per second: SI units throughout; displays convert (transport/status_view.h is the one
# JSON view of these structs, for `--json`, HTTP and /metrics).
struct StageReport {
  device @0 :Text;
  nodeId @1 :Text;
  firstLayer @2 :UInt32;
  lastLayer @3 :UInt32;       # exclusive
  hasEmbedding @4 :Bool;
  hasOutput @5 :Bool;
  state @6 :Text;             # assigned, receiving, loading, ready, failed
  bytesDone @7 :UInt64;
  bytesTotal @8 :UInt64;
  residentBytes @9 :UInt64;   # the daemon's RSS
  dropped @10 :UInt64;        # messages its daemon refused
  # Counters since its daemon started.
  batches @11 :UInt64;
  tokens @12 :UInt64;
  computeS @13 :Float64;
  bytesOut @14 :UInt64;
  refusedHandshakes @15 :UInt64;
  message @16 :Text;          # "cached", "local copy", or why it failed
  # The plan's figures for it.
  weightBytes @17 :Float64;
  kvBytes @18 :Float64;
  memoryBytes @19 :Float64;
  headroomBytes @20 :Float64; # negative: does not fit
  stageTimeS @21 :Float64;    # per decode step of one stream
  hopTimeS @22 :Float64;      # to send one token's output on
  wireType @23 :Text;         # f32, f16 or q8_0: how its output hop carries activations ("" on the last)
  pagedBytes @24 :Float64;    # planned: bytes of its layers read from storage every step (0: all in memory)
  # Measured, counters since its daemon started: bytes its pager read, the time in reads, and the
  # compute's time waiting for a layer (reads not hidden behind compute).
  pagedReadBytes @25 :UInt64;
  pagedReadS @26 :Float64;
  pagedWaitS @27 :Float64;
  # Planned, of stageTimeS: the compute alone (the step if nothing were paged), and the read of
  # pagedBytes at the device's profiled storage rate. The step takes the longer of the two.
  computeTimeS @28 :Float64;
  pagedTimeS @29 :Float64;
  # Counters since its daemon started: its decode steps of more than one row (a draft's, several
  # streams'), and their rows.
  batchedSteps @30 :UInt64;
  batchedRows @31 :UInt64;
}

struct PlanReport {
  planId @0 :UInt64;
  model @1 :Text;             # the path on the head
  modelName @2 :Text;
  nLayers @3 :UInt32;
  objective @4 :Text;
  state @5 :Text;             # staging, loading, ready, waiting for a device, failed
  ready @6 :Bool;
  maxSequences @7 :UInt32;
  nCtx @8 :UInt32;
  failure @9 :Text;
  events @10 :List(Text);     # lost devices, re-plans, pace: the latest, each "UTC-TIME what"
  stages @11 :List(StageReport);
  predictedSPerToken @12 :Float64;  # one stream decoding alone
  predictedTokensPerS @13 :Float64; # all streams at the best micro-batch
  predictedTtftS @14 :Float64;     # for a prompt of predictedPromptTokens
  leftOut @15 :List(Text);    # why each unused device holds no stage
  text @16 :List(Text);       # the planner's explanation, one line each
  predictedPromptTokens @17 :UInt32;
  kvType @18 :Text;           # f32, f16 or q8_0: what every stage's KV cache stores
  eventsDropped @19 :UInt64;  # events older than those in `events`, not kept
}

# ---- the model library: GGUF files in the head's models directories ----

struct ModelsRequest {}

struct LibraryModel {
  id @0 :Text;                # the file's stem: what clients name it by
  path @1 :Text;              # on the head
  name @2 :Text;              # general.name
  arch @3 :Text;
  fileBytes @4 :UInt64;
  weightType @5 :Text;
  nLayers @6 :UInt32;
  loaded @7 :Bool;            # the model being served (or launched)
  fits @8 :Bool;              # the devices up now can hold it
  why @9 :Text;               # why it does not fit, or cannot be read
  devices @10 :List(Text);    # those the planner would use, in pipeline order
  predictedTokensPerS @11 :Float64;  # one conversation decoding alone
  nCtx @12 :UInt32;           # the context and streams a launch with no sizes would get
  streams @13 :UInt32;
}

struct ModelsReply {
  models @0 :List(LibraryModel);
  dirs @1 :List(Text);        # the folders searched
}

struct LaunchReply {
  ok @0 :Bool;
  message @1 :Text;
  planJson @2 :Text;          # unused since protocol 2: see plan
  category @3 :ErrorCategory; # when not ok
  plan @4 :PlanReport;        # when ok
}

struct ChatMessage {
  role @0 :Text;              # system | user | assistant
  content @1 :Text;
}

enum ThinkingSwitch {
  templateDefault @0;         # what the model's template does when enable_thinking is not given
  on @1;
  off @2;
}

struct GenerateRequest {
  prompt @0 :Text;            # plain continuation when `messages` is empty
  nPredict @1 :UInt32;
  sampling @2 :SamplingParams;
  messages @3 :List(ChatMessage);  # a conversation: rendered with the model's chat template
  cachePrompt @4 :Bool = true;  # reuse a kept KV cache that shares the prompt's beginning
  reasoningEffort @5 :Text;   # a chat of gpt-oss: low, medium or high ("" = medium)
  thinking @6 :ThinkingSwitch;  # Qwen 3 / 3.5's enable_thinking
}

# Stops the generation this client started with `requestId`; its KV cache is freed.
struct CancelRequest {
  requestId @0 :UInt64;
}

struct GenerateEvent {
  text @0 :Text;              # the piece of this token (may be part of a UTF-8 character)
  token @1 :Int32;
  done @2 :Bool;
  error @3 :Text;             # set on failure; done is then true
  promptTokens @4 :UInt32;    # on done: counts and timing
  generatedTokens @5 :UInt32;
  ttftMs @6 :Float64;
  decodeTokS @7 :Float64;
  finishReason @8 :Text;      # on done: stop (end of generation), length, cancelled, error
  errorCode @9 :UInt16;       # unused since protocol 2 (was an HTTP-like code): see errorCategory
  chatTemplate @10 :Text;     # on the done event of a chat: which template family rendered it
  errorCategory @11 :ErrorCategory;  # on error
  cachedTokens @12 :UInt32;   # on done: prompt tokens found in a kept cache (not computed again)
  reasoning @13 :Bool;        # text is the model's reasoning, not its answer (chats only: the
                              # gateway, in the head's process, is the one client that sees it)
}

struct StatusRequest {}

struct LinkStatus {
  from @0 :Text;              # device names
  to @1 :Text;
  latencyS @2 :Float64;
  bandwidthBytesPerS @3 :Float64;
}

struct StatusReply {
  json @0 :Text;              # unused since protocol 2: the fields below
  head @1 :Text;              # the head's device name
  hasPlan @2 :Bool;
  plan @3 :PlanReport;
  hasHeadStage @4 :Bool;      # the head's own stage, counters since it started
  headStageBatches @5 :UInt64;
  headStageTokens @6 :UInt64;
  headStageComputeS @7 :Float64;
  hasGeneration @8 :Bool;     # conversations, once a plan has a scheduler
  active @9 :UInt32;
  queued @10 :UInt32;
  requests @11 :UInt64;
  tokensGenerated @12 :UInt64;
  lastDecodeTokS @13 :Float64;
  lastTtftS @14 :Float64;
  links @15 :List(LinkStatus);
  secure @16 :Bool;           # CURVE on (false: --insecure)
  refusedHandshakes @17 :UInt64;
  droppedMalformed @18 :UInt64;
  droppedOutOfPlan @19 :UInt64;
  droppedUnexpected @20 :UInt64;
  droppedBadPayload @21 :UInt64;
  pairingRateLimited @22 :UInt64;  # pairing attempts refused for coming too often from one address
  hasLaunching @23 :Bool;     # a launch receiving its weights beside the plan that serves
  launching @24 :PlanReport;
  draft @25 :Text;            # speculative decoding's draft source ("" for none)
  tokensDrafted @26 :UInt64;  # draft tokens sent down the pipeline to be checked
  tokensAccepted @27 :UInt64; # of them, those the last stage accepted
  decodePasses @28 :UInt64;   # decode passes (one conversation's step through the pipeline)
}

# From the CLI: unload everything. From the head to a device: drop the stage and any staged
# weights of plan `planId` (0: of every plan).
struct StopRequest {
  planId @0 :UInt64;
}

struct StopReply {
  message @0 :Text;
}

# ---- the envelope ----

struct Envelope {
  requestId @0 :UInt64;       # set by the sender of a request, echoed in its replies
  union {
    hello @1 :Hello;
    helloAck @2 :HelloAck;
    heartbeat @3 :Heartbeat;
    assignment @4 :Assignment;
    weightRequest @5 :WeightRequest;
    weightChunk @6 :WeightChunk;
    loadStatus @7 :LoadStatus;
    forward @8 :Forward;
    result @9 :Result;
    release @10 :Release;
    error @11 :Error;
    linkProbe @12 :LinkProbe;
    ping @13 :Ping;
    pong @14 :Pong;
    linkReport @15 :LinkReport;
    devicesRequest @16 :DevicesRequest;
    devicesReply @17 :DevicesReply;
    launchRequest @18 :LaunchRequest;
    launchProgress @19 :LaunchProgress;
    launchReply @20 :LaunchReply;
    generateRequest @21 :GenerateRequest;
    generateEvent @22 :GenerateEvent;
    statusRequest @23 :StatusRequest;
    statusReply @24 :StatusReply;
    stopRequest @25 :StopRequest;
    stopReply @26 :StopReply;
    cancelRequest @27 :CancelRequest;
    pairRequest @28 :PairRequest;
    pairReply @29 :PairReply;
    helloRequest @30 :HelloRequest;
    commit @31 :Commit;
    modelsRequest @32 :ModelsRequest;
    modelsReply @33 :ModelsReply;
  }
}
