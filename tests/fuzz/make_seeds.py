#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

    tests/fuzz/make_seeds.py [--hearth build/bin/hearth]

Small valid inputs (a few KB at most: libFuzzer sizes its inputs after the largest seed):
  gguf_fuzz          vocabulary-only GGUFs written here (SentencePiece, byte-level BPE, every
                     metadata value type) and tiny models written by the project's own writer
                     (`hearth mkmodel --vocab-from` one of them), llama and qwen2, f32 and q8_0
  wire_fuzz          envelopes encoded by `capnp encode` from text (hello, heartbeat, forward...)
  openai_json_fuzz   request bodies of /v1/chat/completions and /v1/completions
  http_request_fuzz  whole HTTP requests (byte 0 says where the stream is cut in two)
  tokenizer_fuzz     byte 0 picks the vocabulary, byte 1 the options, then the text
Regression inputs (crashes once found) live next to these as regress-*; this script leaves them.
Only writes below tests/fuzz/corpus/ and a temporary directory.
"""
import argparse
import os
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")

# ---- GGUF ----
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
           U64: "<Q", I64: "<q", F64: "<d"}
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(fmt[t], v)


def gguf(kv, tensors=(), version=3, alignment=32):
    """kv: [(key, type, value)]; tensors: [(name, shape, ggml_type, data_bytes)]."""
    out = struct.pack("<IIQQ", 0x46554747, version, len(tensors), len(kv))
    for k, t, v in kv:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    offset = 0
    blobs = []
    for name, shape, ttype, data in tensors:
        out += gstr(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ttype, offset)
        blobs.append((offset, data))
        offset += (len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * ((-len(out)) % alignment)
    for off, data in blobs:
        out += data + b"\0" * ((-len(data)) % alignment)
    return out


SP = "\u2581"


def spm_vocab():
    toks = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    toks += [("<0x%02X>" % b, 0.0, 6) for b in (0x0A, 0x20, 0x41, 0xC3, 0xA9)]
    toks += [(SP, -1.0, 1)] + [(c, -1.0, 1) for c in "abcdehilnorstw"]
    toks += [(w, -2.0 - i / 10, 1) for i, w in enumerate(["he", "ll", "hell", "hello", SP + "w", "or", SP + "wor", "ld", SP + "world"])]
    toks += [("<|im_start|>", 0.0, 3), ("<|im_end|>", 0.0, 3), ("<tool>", 0.0, 4)]
    chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    return [
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, [t for t, _, _ in toks])),
        ("tokenizer.ggml.scores", ARR, (F32, [s for _, s, _ in toks])),
        ("tokenizer.ggml.token_type", ARR, (I32, [k for _, _, k in toks])),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.add_bos_token", BOOL, 1),
        ("tokenizer.chat_template", STR, chatml),
    ]


def byte_level_alphabet():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_vocab(pre):
    alpha = byte_level_alphabet()
    sp = alpha[0x20]
    toks = [alpha[b] for b in range(256)]
    types = [1] * 256
    extra = [("<|endoftext|>", 3), ("he", 1), ("ll", 1), ("hell", 1), ("hello", 1), (sp + "w", 1), ("or", 1),
             (sp + "wor", 1), ("ld", 1), (sp + "world", 1), ("<|eot_id|>", 3)]
    toks += [t for t, _ in extra]
    types += [k for _, k in extra]
    merges = ["h e", "l l", "he ll", "hell o", sp + " w", "o r", sp + "w or", "l d", sp + "wor ld"]
    return [
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, pre),
        ("tokenizer.ggml.tokens", ARR, (STR, toks)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, 256),
        ("tokenizer.ggml.eos_token_id", U32, 256),
    ]


def all_types():
    kv = [("t.u8", U8, 7), ("t.i8", I8, -7), ("t.u16", U16, 700), ("t.i16", I16, -700), ("t.u32", U32, 70000),
          ("t.i32", I32, -70000), ("t.f32", F32, 0.5), ("t.bool", BOOL, 1), ("t.str", STR, "héllo"),
          ("t.u64", U64, 1 << 40), ("t.i64", I64, -(1 << 40)), ("t.f64", F64, 0.25),
          ("t.arr", ARR, (ARR, [(U8, [1, 2]), (STR, ["a", "b"])])),
          ("general.alignment", U32, 64), ("general.architecture", STR, "llama")]
    f32 = lambda n: struct.pack("<%df" % n, *([0.5] * n))
    tensors = [("a", [4], 0, f32(4)), ("b", [4, 2], 0, f32(8)), ("c", [32], 8, b"\0\0" + bytes(32))]  # c: q8_0 block
    return gguf(kv, tensors, version=3, alignment=64)


# ---- wire ----
WIRE = {
    "hello": '(requestId = 1, hello = (protocolVersion = 1, nodeId = "a", controlEndpoint = "tcp://127.0.0.1:5000",'
             ' dataEndpoint = "tcp://127.0.0.1:5001", profile = (name = "a", usableMemoryBytes = 1000000000,'
             ' memoryBandwidthBytesPerS = 1e10, decode = [(type = "q8_0", bytesPerS = 5e9), (type = "f32", bytesPerS = 8e9)],'
             ' prefillFlopS = 1e11, stepOverheadS = 0.0001, cores = 4, cpu = "x", os = "linux", arch = "x86_64")))',
    "heartbeat": '(heartbeat = (nodeId = "b", planId = 3, dropped = 0, residentBytes = 123456, batches = 5, tokens = 9))',
    "assignment": '(requestId = 2, assignment = (planId = 3, modelHash = 77, modelName = "m", firstLayer = 0, lastLayer = 2,'
                  ' hasEmbedding = true, hasOutput = false, stageFileBytes = 4096, stageFileHash = 5,'
                  ' nextEndpoint = "tcp://127.0.0.1:5003", nCtx = 512, maxBatch = 8, maxSequences = 2, nEmbd = 64))',
    "forward": '(forward = (planId = 3, chunks = [(seq = 1, pos = 0, nTokens = 2, isPrompt = true, wantToken = true,'
               ' sampling = (temperature = 0.8, topK = 40, topP = 0.95, minP = 0.05, repeatPenalty = 1.1, repeatLastN = 64, seed = 9))],'
               ' tokens = [1, 2], dtype = f32, nEmbd = 64))',
    "result": '(result = (planId = 3, tokens = [(seq = 1, token = 42), (seq = 2, token = 7)]))',
    "release": '(release = (planId = 3, seqs = [1, 2, 3]))',
    "error": '(error = (planId = 3, seqs = [1], message = "stage failed"))',
    "weightRequest": '(weightRequest = (planId = 3, offset = 0, length = 65536))',
    "weightChunk": '(weightChunk = (planId = 3, offset = 65536, checksum = 12345))',
    "loadStatus": '(loadStatus = (planId = 3, state = ready, bytesDone = 10, bytesTotal = 10, message = "ok"))',
    "ping": '(ping = (sentNs = 123456789))',
    "linkProbe": '(linkProbe = (targets = [(nodeId = "b", controlEndpoint = "tcp://127.0.0.1:5004")]))',
    "linkReport": '(linkReport = (links = [(from = "a", to = "b", latencyS = 0.0001)]))',
    "devicesReply": '(devicesReply = (devices = [(nodeId = "a", controlEndpoint = "tcp://x:1", alive = true, isHead = true,'
                    ' profile = (name = "a", memoryBandwidthBytesPerS = 1e10, prefillFlopS = 1e11))]))',
    "launchRequest": '(launchRequest = (modelPath = "/m.gguf", objective = "latency", ctx = 512, devices = ["a", "b"], split = "a:1,b:1", streams = 2))',
    "generateRequest": '(requestId = 5, generateRequest = (prompt = "", nPredict = 16, sampling = (temperature = 0, topK = 1, topP = 1, minP = 0,'
                       ' repeatPenalty = 1, repeatLastN = 64, seed = 1), messages = [(role = "user", content = "hi")]))',
    "generateEvent": '(generateEvent = (text = "hi", token = 5, done = true, promptTokens = 3, generatedTokens = 1, ttftMs = 1.5, finishReason = "stop"))',
    "statusReply": '(statusReply = (json = "{}"))',
    "cancelRequest": '(cancelRequest = (requestId = 5))',
}

# ---- HTTP and JSON ----
CHAT = b'{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":8,"stream":true,"stream_options":{"include_usage":true},"temperature":0.7,"top_p":0.9,"seed":1,"stop":["\\n\\n","END"]}'
BODIES = {
    "chat-min": b'{"messages":[{"role":"user","content":"hi"}]}',
    "chat-full": CHAT,
    "chat-parts": b'{"messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant"}],"top_k":40,"min_p":0.05,"repeat_penalty":1.1,"presence_penalty":0,"frequency_penalty":0.5,"n":1,"logprobs":false,"max_completion_tokens":3}',
    "completion": b'{"prompt":"Once upon a time","max_tokens":16,"echo":false,"stop":"\\n","seed":-5}',
    "completion-list": b'{"prompt":["x"],"stream":false,"temperature":null}',
    "bad-field": b'{"messages":[{"role":"robot","content":1}],"temperature":"hot","tools":[{}]}',
    "unicode": '{"messages":[{"role":"user","content":"h\u00e9llo \\ud83d\\ude00 \\u0000"}]}'.encode(),
}


def http(method, target, body=b"", headers=()):
    h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, target)
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    if body or method == "POST":
        h += "Content-Length: %d\r\n" % len(body)
    return h.encode() + b"\r\n" + body


def chunked(body, size=16):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


REQUESTS = {
    "chat": http("POST", "/v1/chat/completions", CHAT, [("Content-Type", "application/json"), ("Authorization", "Bearer k")]),
    "completion": http("POST", "/v1/completions", BODIES["completion"], [("Content-Type", "application/json")]),
    "health": http("GET", "/health"),
    "models-keepalive": http("GET", "/v1/models", headers=[("Connection", "keep-alive")]) + http("GET", "/metrics"),
    "chunked": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODIES["chat-min"]),
    "expect": http("POST", "/v1/chat/completions", BODIES["chat-min"], [("Expect", "100-continue")]),
    "options": http("OPTIONS", "/v1/chat/completions", headers=[("Origin", "http://x"), ("Access-Control-Request-Method", "POST")]),
    "http10": b"GET /v1/hearth/status HTTP/1.0\r\n\r\n",
}

# ---- tokenizer: selector byte (vocabulary), options byte (1: BOS, 2: control tokens), text ----
TEXTS = [
    (0, 0, "Hello world! 123 4567"),
    (1, 1, "hello  world\n\n\tIt's 2024; we're   here."),
    (2, 0, "日本語のテキスト 12345 über café"),
    (3, 3, "<|endoftext|>hello<tool> world<|im_end|>"),
    (8, 1, " hello world é 日本"),
    (9, 1, "hello \xff\xfe bytes"),
    (10, 1, "no byte tokens: Ωmega"),
    (11, 3, "<s>[INST] Hello [/INST]</s> <|end|>"),
    (13, 1, "  leading spaces and trailing   "),
    (4, 0, "def f(x):\n    return x**2  # code\r\n"),
    (6, 0, "🦙 emoji 🦙🦙 and ZWJ 👩‍👩‍👧"),
]


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth", default=os.path.join(ROOT, "build", "bin", "hearth"))
    args = ap.parse_args()

    spm = gguf(spm_vocab())
    bpe = gguf(bpe_vocab("llama-bpe"))
    write("gguf_fuzz", "vocab-spm.gguf-seed", spm)
    write("gguf_fuzz", "vocab-bpe.gguf-seed", bpe)
    write("gguf_fuzz", "all-types.gguf-seed", all_types())
    write("gguf_fuzz", "v2-empty.gguf-seed", gguf([], version=2))
    with tempfile.TemporaryDirectory() as tmp:
        for name, vocab, extra in [
            ("model-llama-f32.gguf-seed", spm, ["--arch", "llama", "--type", "f32", "--dim", "8", "--ffn", "8"]),
            ("model-qwen2-f16.gguf-seed", bpe, ["--arch", "qwen2", "--type", "f16", "--dim", "8", "--ffn", "8"]),
        ]:
            vf = os.path.join(tmp, "vocab.gguf")
            with open(vf, "wb") as f:
                f.write(vocab)
            out = os.path.join(tmp, name)
            subprocess.run([args.hearth, "mkmodel", "--out", out, "--vocab-from", vf, "--layers", "1", "--heads", "1",
                            "--kv-heads", "1", "--ctx", "16", "--seed", "1"] + extra, check=True, stderr=subprocess.DEVNULL)
            with open(out, "rb") as f:
                write("gguf_fuzz", name, f.read())

        schema = os.path.join(ROOT, "transport", "hearth.capnp")
        for name, text in WIRE.items():
            data = subprocess.run(["capnp", "encode", schema, "Envelope"], input=text.encode(), check=True,
                                  capture_output=True).stdout
            write("wire_fuzz", name + ".bin", data)

    for name, body in BODIES.items():
        write("openai_json_fuzz", name + ".json", body)
    for i, (name, req) in enumerate(REQUESTS.items()):
        write("http_request_fuzz", name + ".http", bytes([(i * 37) % 251]) + req)
    for i, (sel, opt, text) in enumerate(TEXTS):
        data = text.encode("utf-8", "surrogateescape") if "\xff" not in text else text.encode("latin-1")
        write("tokenizer_fuzz", "text-%02d" % i, bytes([sel, opt]) + data)


if __name__ == "__main__":
    main()
