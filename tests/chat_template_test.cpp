// Chat templates: every real template in shared/chat-templates is recognised as its family and a
// conversation renders to the text the template itself gives (expected strings written by hand
// from each template); families without a file there are checked on their distinctive lines.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/reply_filter.h"
#include "runtime/text/vocab.h"
#include "tests/test_util.h"

using namespace hearth::runtime;

namespace {

// System, user, assistant (with spaces around it, which some templates trim), then a user turn.
const std::vector<ChatMessage> kChat = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", " Hi there. "},
    {"user", "What is 2+2?"},
};

const std::string kDsUser =
    "<\xef\xbd\x9c"
    "User\xef\xbd\x9c>";
const std::string kDsAssistant =
    "<\xef\xbd\x9c"
    "Assistant\xef\xbd\x9c>";
const std::string kDsEos =
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81"
    "of\xe2\x96\x81"
    "sentence\xef\xbd\x9c>";

const std::string kChatml =
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
    "<|im_start|>assistant\n Hi there. <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
const std::string kLlama3 =
    "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n";
const std::string kLlama31 =
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    "You are a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n";
const std::string kCommandR =
    "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant.<|END_OF_TURN_TOKEN|>"
    "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello!<|END_OF_TURN_TOKEN|>"
    "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there.<|END_OF_TURN_TOKEN|>"
    "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>What is 2+2?<|END_OF_TURN_TOKEN|>"
    "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";

struct TemplateCase {
  const char* file;
  ChatFamily family;
  const char* name;
  std::string expected;
};

const std::vector<TemplateCase> kFiles = {
    // Qwen 2.5 writes its default system message only when the conversation has none.
    {"Qwen-Qwen2.5-7B-Instruct", ChatFamily::CHATML, "chatml-qwen2.5", kChatml},
    // Tool-use templates: the plain ChatML turns, without the tools preamble (see chat_template.h).
    {"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", ChatFamily::CHATML, "chatml", kChatml},
    {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use", ChatFamily::CHATML, "chatml", kChatml},
    // Llama 3.1+: the system turn carries cut-off and date; contents are trimmed.
    {"meta-llama-Llama-3.1-8B-Instruct", ChatFamily::LLAMA3, "llama3.1", kLlama31},
    {"meta-llama-Llama-3.2-3B-Instruct", ChatFamily::LLAMA3, "llama3.1", kLlama31},
    {"meta-llama-Llama-3.3-70B-Instruct", ChatFamily::LLAMA3, "llama3.1", kLlama31},
    {"fireworks-ai-llama-3-firefunction-v2", ChatFamily::LLAMA3, "llama3", kLlama3},
    {"meetkai-functionary-medium-v3.1", ChatFamily::LLAMA3, "llama3", kLlama3},
    {"meetkai-functionary-medium-v3.2", ChatFamily::LLAMA3, "llama3", kLlama3},
    // DeepSeek R1: system text first, no newlines; answers keep their spaces.
    {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B", ChatFamily::DEEPSEEK_R1, "deepseek-r1",
     "You are a helpful assistant." + kDsUser + "Hello!" + kDsAssistant + " Hi there. " + kDsEos + kDsUser + "What is 2+2?" +
         kDsAssistant + "<think>\n"},
    {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", ChatFamily::DEEPSEEK_R1, "deepseek-r1",
     "You are a helpful assistant." + kDsUser + "Hello!" + kDsAssistant + " Hi there. " + kDsEos + kDsUser + "What is 2+2?" +
         kDsAssistant + "<think>\n"},
    // llama.cpp's R1 template also ends user turns with <｜end▁of▁sentence｜>.
    {"llama-cpp-deepseek-r1", ChatFamily::DEEPSEEK_R1, "deepseek-r1-user-eos",
     "You are a helpful assistant." + kDsUser + "Hello!" + kDsEos + kDsAssistant + " Hi there. " + kDsEos + kDsUser +
         "What is 2+2?" + kDsEos + kDsAssistant + "<think>\n"},
    // Gemma: no system role; it goes in front of the first turn. Contents trimmed, "model" answers.
    {"google-gemma-2-2b-it", ChatFamily::GEMMA, "gemma",
     "<start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n<start_of_turn>model\nHi there.<end_of_turn>\n"
     "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"},
    {"microsoft-Phi-3.5-mini-instruct", ChatFamily::PHI3, "phi3",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\n Hi there. <|end|>\n"
     "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n"},
    // Mistral Nemo (v3-tekken): no spaces, the system message before the last user message.
    {"mistralai-Mistral-Nemo-Instruct-2407", ChatFamily::MISTRAL, "mistral-v3-tekken",
     "[INST]Hello![/INST] Hi there. </s>[INST]You are a helpful assistant.\n\nWhat is 2+2?[/INST]"},
    // Command-R tool-use templates: the plain Command-R turns, without the tools preamble.
    {"CohereForAI-c4ai-command-r-plus-tool_use", ChatFamily::COMMAND_R, "command-r", kCommandR},
    {"CohereForAI-c4ai-command-r7b-12-2024-tool_use", ChatFamily::COMMAND_R, "command-r", kCommandR},
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string render(const std::string& jinja, const ChatRenderOptions& o = {}) {
  return render_chat(detect_chat_template(jinja), kChat, o);
}

}  // namespace

TEST_SUITE("chat_template") {
  TEST_CASE("every real template is recognised and renders as the template does") {
    auto dir = hearth::test::shared_dir();
    if (!dir || !std::filesystem::exists(*dir / "chat-templates")) {
      MESSAGE("SKIPPED: shared reference data 'chat-templates' is absent (set HEARTH_SHARED_DIR to the shared/ folder)");
      return;
    }
    // Every .jinja file there has a case: a new template must be looked at, not silently ignored.
    size_t files = 0;
    for (const auto& e : std::filesystem::directory_iterator(*dir / "chat-templates")) {
      if (e.path().extension() != ".jinja") continue;
      ++files;
      const std::string stem = e.path().stem().string();
      CAPTURE(stem);
      CHECK(std::any_of(kFiles.begin(), kFiles.end(), [&](const TemplateCase& c) { return stem == c.file; }));
    }
    int matched = 0, present = 0;
    for (const auto& c : kFiles) {
      const auto path = *dir / "chat-templates" / (std::string(c.file) + ".jinja");
      if (!std::filesystem::exists(path)) continue;
      ++present;
      CAPTURE(c.file);
      const ChatTemplate t = detect_chat_template(read_text(path.string()));
      CHECK(t.family == c.family);
      CHECK(t.name == c.name);
      CHECK_FALSE(t.fallback);
      const std::string out = render_chat(t, kChat);
      CHECK(out == c.expected);
      matched += t.family == c.family && t.name == c.name && out == c.expected;
    }
    MESSAGE(matched << "/" << present << " templates detected and rendered as expected (" << files << " files)");
  }

  TEST_CASE("absent or unknown templates fall back to ChatML and say so") {
    for (const char* jinja : {"", "{% for m in messages %}{{ m.content }}{% endfor %}"}) {
      const ChatTemplate t = detect_chat_template(jinja);
      CHECK(t.fallback);
      CHECK(t.family == ChatFamily::CHATML);
      CHECK(t.name == "chatml");
      CHECK(render_chat(t, kChat) == kChatml);
    }
  }

  TEST_CASE("Llama 2: system folded into the first turn, BOS before later turns") {
    // meta-llama/Llama-2-7b-chat-hf (its distinctive lines).
    const std::string jinja =
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
        "'\\n<</SYS>>\\n\\n' + message['content'] %}{% endif %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}";
    CHECK(detect_chat_template(jinja).family == ChatFamily::LLAMA2);
    CHECK(
        render(jinja) ==
        "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]");
    CHECK(render(jinja, {.bos_token = "<BOS>", .eos_token = "<EOS>"}) ==
          "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. <EOS><BOS>[INST] What is 2+2? "
          "[/INST]");
  }

  TEST_CASE("Mistral versions differ in spaces and in where the system message goes") {
    const std::string v1 = "{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}";
    CHECK(detect_chat_template(v1).name == "mistral-v1");
    CHECK(render(v1) == " [INST] You are a helpful assistant.\n\nHello! [/INST]  Hi there. </s> [INST] What is 2+2? [/INST]");
    const std::string v3 =
        "[AVAILABLE_TOOLS] {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}";
    CHECK(detect_chat_template(v3).name == "mistral-v3");
    CHECK(render(v3) == "[INST] Hello![/INST] Hi there.</s>[INST] You are a helpful assistant.\n\nWhat is 2+2?[/INST]");
    const std::string v7 =
        "{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{{ '[INST] ' + message['content'] + '[/INST]' }}";
    CHECK(detect_chat_template(v7).name == "mistral-v7");
    CHECK(render(v7) ==
          "[SYSTEM_PROMPT] You are a helpful assistant.[/SYSTEM_PROMPT][INST] Hello![/INST]  Hi there. </s>[INST] What is "
          "2+2?[/INST]");
    // Mistral 7B v0.1 (no system support of its own: the system message leads the first turn).
    const std::string legacy = "{{ '[INST] ' + message['content'] + ' [/INST]' }}{{ message['content'] + eos_token}}";
    CHECK(detect_chat_template(legacy).name == "mistral-legacy");
    CHECK(render(legacy) == "[INST] You are a helpful assistant.\n\nHello! [/INST] Hi there. </s>[INST] What is 2+2? [/INST]");
    // v3 drops the system message when the conversation does not end with a user turn.
    const std::vector<ChatMessage> answered(kChat.begin(), kChat.begin() + 3);
    CHECK(render_chat(detect_chat_template(v3), answered) == "[INST] Hello![/INST] Hi there.</s>");
  }

  TEST_CASE("Zephyr / TinyLlama, Llama 3.0, SmolLM2, DeepSeek Coder and V2, Command-R") {
    // TinyLlama-1.1B-Chat-v1.0 and HuggingFaceH4/zephyr-7b-beta.
    const std::string zephyr = "{{ '<|user|>\\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}";
    CHECK(detect_chat_template(zephyr).family == ChatFamily::ZEPHYR);
    CHECK(render(zephyr) ==
          "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\n Hi there. </s>\n"
          "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n");
    // Meta-Llama-3-8B-Instruct: no dated system turn.
    const std::string llama3 =
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}";
    CHECK(detect_chat_template(llama3).name == "llama3");
    CHECK(render(llama3) == kLlama3);
    // SmolLM2-Instruct: ChatML with a default system message, used only without one.
    const std::string smollm2 =
        "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant "
        "named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] }}";
    const ChatTemplate smol = detect_chat_template(smollm2);
    CHECK(smol.name == "chatml-smollm2");
    CHECK(render_chat(smol, kChat) == kChatml);
    CHECK(render_chat(smol, std::vector<ChatMessage>{{"user", "Hi"}}) ==
          "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    // deepseek-coder-6.7b-instruct: a default system text when there is none.
    const std::string coder =
        "{{'### Instruction:\\n' + message['content'] + '\\n'}}{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}";
    CHECK(detect_chat_template(coder).family == ChatFamily::DEEPSEEK_CODER);
    CHECK(render(coder) ==
          "You are a helpful assistant.### Instruction:\nHello!\n### Response:\n Hi there. \n<|EOT|>\n"
          "### Instruction:\nWhat is 2+2?\n### Response:\n");
    const std::string no_system = render_chat(detect_chat_template(coder), std::vector<ChatMessage>{{"user", "Hi"}});
    CHECK(no_system.rfind("You are an AI programming assistant, utilizing the Deepseek Coder model", 0) == 0);
    CHECK(no_system.find("refuse to answer\n### Instruction:\nHi\n### Response:\n") != std::string::npos);
    // DeepSeek-V2-Chat.
    const std::string v2 = "{{ 'User: ' + message['content'] + '\\n\\n' }}{{ 'Assistant: ' + message['content'] + eos_token }}";
    CHECK(detect_chat_template(v2).family == ChatFamily::DEEPSEEK_V2);
    CHECK(render(v2) ==
          "You are a helpful assistant.\n\nUser: Hello!\n\nAssistant:  Hi there. " + kDsEos + "User: What is 2+2?\n\nAssistant:");
    // c4ai-command-r-v01 (the plain chat template).
    const std::string command_r =
        "{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}"
        "{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}";
    CHECK(detect_chat_template(command_r).family == ChatFamily::COMMAND_R);
    CHECK(render(command_r) == kCommandR);
  }

  TEST_CASE("generation prompt, DeepSeek R1 reasoning and Phi-3's closing EOS") {
    const ChatTemplate chatml = detect_chat_template("<|im_start|>");
    CHECK(render_chat(chatml, kChat, {.add_generation_prompt = false}) ==
          kChatml.substr(0, kChatml.size() - std::string("<|im_start|>assistant\n").size()));
    // Phi-3 ends a conversation without generation prompt with EOS.
    const ChatTemplate phi3 = detect_chat_template("<|user|> <|end|>");
    const std::string phi = render_chat(phi3, std::vector<ChatMessage>{{"user", "Hi"}}, {.add_generation_prompt = false});
    CHECK(phi == "<|user|>\nHi<|end|>\n<|endoftext|>");
    // Phi-3.5 skips an empty system message.
    CHECK(render_chat(phi3, std::vector<ChatMessage>{{"system", ""}, {"user", "Hi"}}) == "<|user|>\nHi<|end|>\n<|assistant|>\n");
    // R1 shows earlier answers without their reasoning, and keeps the last system message.
    ChatTemplate r1 = detect_chat_template(kDsUser + kDsAssistant);
    CHECK(r1.family == ChatFamily::DEEPSEEK_R1);
    CHECK_FALSE(r1.think);
    const std::vector<ChatMessage> chat = {
        {"system", "A"}, {"user", "Q"}, {"assistant", "<think>\nhmm\n</think>\n\n4"}, {"system", "B"}, {"user", "Q2"}};
    CHECK(render_chat(r1, chat) == "B" + kDsUser + "Q" + kDsAssistant + "\n\n4" + kDsEos + kDsUser + "Q2" + kDsAssistant);
  }

  TEST_CASE("Gemma folds the system message into the first turn whoever speaks") {
    const ChatTemplate gemma = detect_chat_template("<start_of_turn>");
    CHECK(render_chat(gemma, std::vector<ChatMessage>{{"system", "Be brief."}, {"user", "  Hi  "}}) ==
          "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    CHECK(render_chat(gemma, std::vector<ChatMessage>{{"user", "Hi"}}) ==
          "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  }

  TEST_CASE("Llama 3.1 always writes the system turn, with the date given") {
    const ChatTemplate t = detect_chat_template("<|start_header_id|><|end_header_id|> Cutting Knowledge Date Today Date");
    CHECK(t.dated_system);
    CHECK(render_chat(t, std::vector<ChatMessage>{{"user", "Hi"}}, {.date = "01 Jan 2025"}) ==
          "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n"
          "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  }

  TEST_CASE("gpt-oss's harmony format: system preamble, developer instructions, past answers on the final channel") {
    // The detection llama.cpp uses; the expected text follows OpenAI's template (models/templates/
    // openai-gpt-oss-120b.jinja in llama.cpp) without tools.
    const ChatTemplate t = detect_chat_template("{{- \"<|start|>system<|message|>\" }} ... <|channel|>final<|message|>");
    CHECK(t.family == ChatFamily::HARMONY);
    CHECK(t.name == "harmony");
    const std::string preamble =
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
        "Current date: 2026-12-04\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be "
        "included for every message.<|end|>";
    CHECK(render_chat(t, kChat, {.iso_date = "2026-12-04"}) ==
          preamble + "<|start|>developer<|message|># Instructions\n\nYou are a helpful assistant.\n\n<|end|>"
                     "<|start|>user<|message|>Hello!<|end|><|start|>assistant<|channel|>final<|message|> Hi there. <|end|>"
                     "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant");
    // No system message, no developer turn; the effort is the caller's.
    CHECK(render_chat(t, std::vector<ChatMessage>{{"user", "Hi"}}, {.iso_date = "2026-12-04", .reasoning_effort = "low"}) ==
          "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
          "Current date: 2026-12-04\n\nReasoning: low\n\n# Valid channels: analysis, commentary, final. Channel must be "
          "included for every message.<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant");
    // Without a date given, today's.
    const std::string today = render_chat(t, std::vector<ChatMessage>{{"user", "Hi"}});
    CHECK(today.find("Current date: 20") != std::string::npos);
  }

  // A vocabulary of these pieces: those in <...> are control tokens.
  Vocab vocab_of(const std::vector<std::string>& pieces) {
    GgufMetadata md;
    std::vector<GgufValue> tokens, types;
    for (const auto& p : pieces) {
      tokens.push_back(GgufValue::str(p));
      types.push_back(GgufValue::i32(p.starts_with("<") ? 3 : 1));  // control tokens, normal text
    }
    md.set("tokenizer.ggml.model", GgufValue::str("llama"));
    md.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, std::move(tokens)));
    md.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, std::move(types)));
    md.set("tokenizer.ggml.eot_token_id", GgufValue::u32(6));  // some conversions name <|end|> as EOT
    return load_vocab(md);
  }

  // What a reply of these pieces shows: {answer, reasoning}.
  std::pair<std::string, std::string> shown(ReplyFilter f, const Vocab& v, const std::vector<std::string>& reply) {
    std::pair<std::string, std::string> out;
    for (const auto& p : reply) {
      const ReplyPiece piece = f.next(v.find(p), p);
      (piece.part == ReplyPart::kAnswer ? out.first : out.second) += piece.text;
    }
    return out;
  }

  using Shown = std::pair<std::string, std::string>;

  TEST_CASE(
      "a harmony reply: the final channel is the answer, analysis the reasoning; <|end|> does not stop it, <|return|> does") {
    const Vocab v = vocab_of({"<unk>", "<s>", "</s>", "<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>",
                              "<|call|>", "analysis", "final", "assistant", "Let me think", "4", " ", "commentary", "\n"});
    const auto id = [&](const std::string& p) { return v.find(p); };
    CHECK(v.is_end_of_generation(id("<|return|>")));
    CHECK(v.is_end_of_generation(id("<|call|>")));
    CHECK_FALSE(v.is_end_of_generation(id("<|end|>")));

    const ChatTemplate harmony = detect_chat_template("<|start|> <|channel|>");
    const std::vector<std::string> reply = {"<|channel|>", "analysis",  "<|message|>", "Let me think", "<|end|>",
                                            "<|start|>",   "assistant", "<|channel|>", "final",        "<|message|>",
                                            "4",           " ",         "4"};
    CHECK(shown(ReplyFilter::for_chat(harmony, v), v, reply) == Shown{"4 4", "Let me think"});
    // A commentary message (a tool call) is neither; two analysis messages are two paragraphs.
    CHECK(shown(ReplyFilter::for_chat(harmony, v), v, {"<|channel|>",
                                                       "analysis",
                                                       "<|message|>",
                                                       "Let me think",
                                                       "<|end|>",
                                                       "<|start|>",
                                                       "assistant",
                                                       "<|channel|>",
                                                       "commentary",
                                                       "<|message|>",
                                                       "4",
                                                       "<|end|>",
                                                       "<|start|>",
                                                       "assistant",
                                                       "<|channel|>",
                                                       "analysis",
                                                       "<|message|>",
                                                       "\n",
                                                       "4",
                                                       "\n",
                                                       "<|end|>",
                                                       "<|start|>",
                                                       "assistant",
                                                       "<|channel|>",
                                                       " final",
                                                       "<|message|>",
                                                       "4"}) == Shown{"4", "Let me think\n\n4"});
    // A reply that opens with <|end|> goes on to the next header, as before any message.
    CHECK(shown(ReplyFilter::for_chat(harmony, v), v,
                {"<|end|>", "<|start|>", "assistant", "<|channel|>", "analysis", "<|message|>", "Let me think", "<|end|>",
                 "<|start|>", "assistant", "<|channel|>", "final", "<|message|>", "4"}) == Shown{"4", "Let me think"});
    // A reply without a header is all answer, as it is; other templates show everything.
    CHECK(shown(ReplyFilter::for_chat(harmony, v), v, {" ", "4", " ", "4"}) == Shown{" 4 4", ""});
    CHECK(shown(ReplyFilter::for_chat(detect_chat_template("<|im_start|>"), v), v, {"<|channel|>", "4"}) ==
          Shown{"<|channel|>4", ""});
    // Carried mid-reply (a copy), the filter goes on where it was.
    ReplyFilter f = ReplyFilter::for_chat(harmony, v);
    for (size_t i = 0; i < 10; ++i) f.next(id(reply[i]), reply[i]);
    ReplyFilter carried = f;
    const ReplyPiece p = carried.next(id("4"), "4");
    CHECK(p.text == "4");
    CHECK(p.part == ReplyPart::kAnswer);
  }

  TEST_CASE("a <think> block is the reasoning, without its markers and the blank lines around them") {
    const Vocab v = vocab_of({"<unk>", "<s>", "</s>", "<think>", "</think>", "\n", "\n\n", "Hmm", ",", " so", " 4", "4", " "});
    const ChatTemplate qwen3 = detect_chat_template("<|im_start|> {%- if '</think>' in content %}");
    CHECK(qwen3.reasoning);
    CHECK_FALSE(qwen3.think);
    // The model opens the block itself (Qwen 3): leading and trailing blank lines go.
    CHECK(shown(ReplyFilter::for_chat(qwen3, v), v,
                {"<think>", "\n", "Hmm", ",", "\n\n", " so", " ", "\n", "</think>", "\n\n", "4", " 4", "\n"}) ==
          Shown{"4 4\n", "Hmm,\n\n so"});
    // A marker that changes nothing is hidden, and adds nothing.
    CHECK(shown(ReplyFilter::for_chat(qwen3, v), v, {"<think>", "Hmm", "</think>", "4", "</think>", "4"}) == Shown{"44", "Hmm"});
    // An empty block (thinking switched off) shows nothing of it.
    CHECK(shown(ReplyFilter::for_chat(qwen3, v), v, {"<think>", "\n\n", "</think>", "\n\n", "4"}) == Shown{"4", ""});
    // No block at all: the answer as it is, leading space included.
    CHECK(shown(ReplyFilter::for_chat(qwen3, v), v, {" ", "4", "\n"}) == Shown{" 4\n", ""});
    // The generation prompt opened the block (Qwen 3.5, QwQ, DeepSeek R1): the reply starts in it.
    const ChatTemplate qwen35 = detect_chat_template(
        "<|im_start|> </think> {%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
        "{%- else %}{{- '<think>\\n' }}{%- endif %}");
    CHECK(qwen35.think);
    CHECK(shown(ReplyFilter::for_chat(qwen35, v), v, {"Hmm", "\n", "</think>", "\n\n", "4"}) == Shown{"4", "Hmm"});
    // Thinking switched off: the prompt closed the block, the reply is the answer.
    CHECK(shown(ReplyFilter::for_chat(qwen35, v, {.thinking = false}), v, {"4", " 4"}) == Shown{"4 4", ""});
    // A model that never closes it (cut by max_tokens) has said only reasoning.
    CHECK(shown(ReplyFilter::for_chat(qwen35, v), v, {"Hmm", ",", " so"}) == Shown{"", "Hmm, so"});
    // A vocabulary without the markers: nothing to separate.
    const Vocab plain = vocab_of({"<unk>", "<s>", "</s>", "Hmm", "4"});
    CHECK(shown(ReplyFilter::for_chat(qwen35, plain), plain, {"Hmm", "4"}) == Shown{"Hmm4", ""});
    // A raw prompt (no chat) is shown whole, markers and all.
    CHECK(shown(ReplyFilter(), v, {"<think>", "Hmm", "</think>", "4"}) == Shown{"<think>Hmm</think>4", ""});
  }

  TEST_CASE("ChatML of a reasoning model: the generation prompt's <think> block, as each Qwen template writes it") {
    const std::vector<ChatMessage> chat = {{"user", "2+2?"}, {"assistant", "<think>\nadd\n</think>\n\n4"}, {"user", "and 3+3?"}};
    // The generation prompts of the three kinds of Qwen template (their literals as the Jinja
    // text holds them, backslash-n included), and of a template that writes the open block in one.
    const std::string header =
        "<|im_start|> {%- if '</think>' in content %} {%- if add_generation_prompt %}"
        "{{- '<|im_start|>assistant\\n' }}";
    const ChatTemplate qwen3 = detect_chat_template(
        header +
        "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}");
    const ChatTemplate qwen35 = detect_chat_template(
        header +
        "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
        "{%- else %}{{- '<think>\\n' }}{%- endif %}");
    const ChatTemplate qwen35_small =
        detect_chat_template(header +
                             "{%- if enable_thinking is defined and enable_thinking is true %}{{- '<think>\\n' }}"
                             "{%- else %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}");
    const ChatTemplate qwq = detect_chat_template("<|im_start|> </think> {{- '<|im_start|>assistant\\n<think>\\n' }}");
    CHECK(qwen3.name == "chatml-reasoning");
    CHECK(qwen35.name == "chatml-think");
    CHECK(qwen35_small.name == "chatml-think-off");
    CHECK(qwq.name == "chatml-think");

    // Earlier answers lose their reasoning; the prompt ends as the template's default does.
    CHECK(render_chat(qwen35, chat) ==
          "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n"
          "<|im_start|>assistant\n<think>\n");
    const std::string open = "<|im_start|>assistant\n<think>\n", closed = "<|im_start|>assistant\n<think>\n\n</think>\n\n",
                      none = "<|im_start|>assistant\n";
    const std::vector<ChatMessage> one = {{"user", "2+2?"}};
    struct Case {
      const ChatTemplate* t;
      std::optional<bool> thinking;
      const std::string* ends;
      bool opens;
    };
    for (const Case& c : std::vector<Case>{{&qwen3, {}, &none, false},
                                           {&qwen3, true, &none, false},
                                           {&qwen3, false, &closed, false},
                                           {&qwen35, {}, &open, true},
                                           {&qwen35, true, &open, true},
                                           {&qwen35, false, &closed, false},
                                           {&qwen35_small, {}, &closed, false},
                                           {&qwen35_small, true, &open, true},
                                           {&qwen35_small, false, &closed, false},
                                           {&qwq, {}, &open, true},
                                           {&qwq, false, &open, true}}) {  // no switch in its template
      CAPTURE(c.t->name);
      CAPTURE(c.thinking.has_value() ? (*c.thinking ? "on" : "off") : "default");
      const std::string prompt = render_chat(*c.t, one, {.thinking = c.thinking});
      CHECK(prompt == "<|im_start|>user\n2+2?<|im_end|>\n" + *c.ends);
      CHECK(opens_think_block(*c.t, {.thinking = c.thinking}) == c.opens);
    }
    // An earlier answer without a block keeps its leading newlines, as the template does.
    CHECK(render_chat(qwen3, std::vector<ChatMessage>{{"user", "a"}, {"assistant", "\n\nb"}, {"user", "c"}})
              .find("<|im_start|>assistant\n\n\nb<|im_end|>") != std::string::npos);
    // Plain ChatML ignores the switch and keeps an answer as it was written.
    CHECK(render_chat(detect_chat_template("<|im_start|>"), one, {.thinking = false}).ends_with("assistant\n"));
    CHECK(render_chat(detect_chat_template("<|im_start|>"), chat).find("<think>\nadd") != std::string::npos);
  }

}  // TEST_SUITE
