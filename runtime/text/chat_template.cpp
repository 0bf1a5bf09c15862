#include "runtime/text/chat_template.h"

#include <algorithm>
#include <ctime>

namespace hearth::runtime {

namespace {

// DeepSeek's markers use U+FF5C (fullwidth vertical line) and U+2581; spelled as bytes (and split
// where a hex escape would swallow the next letter) so the source encoding cannot change them.
const std::string kDsUser =
    "<\xef\xbd\x9c"
    "User\xef\xbd\x9c>";
const std::string kDsAssistant =
    "<\xef\xbd\x9c"
    "Assistant\xef\xbd\x9c>";
const std::string kDsEndOfSentence =
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81"
    "of\xe2\x96\x81"
    "sentence\xef\xbd\x9c>";

const std::string kQwenSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
const std::string kSmolLmSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
const std::string kDeepseekCoderSystem =
    "You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek Company, and you "
    "only answer questions related to computer science. For politically sensitive questions, security and privacy "
    "issues, and other non-computer science questions, you will refuse to answer\n";

// Jinja's |trim and Python's str.strip().
std::string trim(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

std::string or_default(const std::string& s, const std::string& fallback) { return s.empty() ? fallback : s; }

// A leading system message, split from the rest (the templates that treat it apart).
struct SystemSplit {
  bool has_system = false;
  std::string system;
  std::span<const ChatMessage> rest;
};

SystemSplit split_system(std::span<const ChatMessage> messages) {
  if (!messages.empty() && messages[0].role == "system") return {true, messages[0].content, messages.subspan(1)};
  return {false, {}, messages};
}

// An earlier answer of a reasoning model without its reasoning: what follows the last </think>.
std::string_view after_reasoning(std::string_view content) {
  const size_t end = content.rfind("</think>");
  return end == std::string_view::npos ? content : content.substr(end + 8);
}

constexpr std::string_view kOpenThink = "<think>\n", kClosedThink = "<think>\n\n</think>\n\n";

// What a ChatML reasoning template writes after the assistant's header, as its enable_thinking
// branches do.
std::string_view chatml_think_prompt(const ChatTemplate& t, const ChatRenderOptions& o) {
  if (!t.reasoning && !t.think) return "";
  // Templates without the switch (QwQ, Qwen3 2507 Thinking) always write their default.
  if (!o.thinking || !t.thinking_switch) return t.think ? kOpenThink : t.think_off ? kClosedThink : "";
  if (!*o.thinking) return kClosedThink;
  return t.think || t.think_off ? kOpenThink : "";  // Qwen 3: thinking is its default, nothing written
}

std::string render_chatml(const ChatTemplate& t, std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  std::string out;
  if (!t.default_system.empty() && (messages.empty() || messages[0].role != "system"))
    out += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
  for (const auto& m : messages) {
    std::string_view content = m.content;
    if (t.reasoning && m.role == "assistant" && content.find("</think>") != std::string_view::npos) {
      // Qwen 3's templates: the answer after the block, from its first line.
      content = after_reasoning(content);
      content.remove_prefix(std::min(content.find_first_not_of('\n'), content.size()));
    }
    out += "<|im_start|>" + m.role + "\n";
    out += content;
    out += "<|im_end|>\n";
  }
  if (o.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    out += chatml_think_prompt(t, o);
  }
  return out;
}

// Meta's Llama 2 chat template: the system message is folded into the first turn, each later user
// turn starts with BOS, answers end with EOS. It has no generation prompt: "[/INST]" is one.
std::string render_llama2(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const auto [has_system, system, rest] = split_system(messages);
  const std::string bos = or_default(o.bos_token, "<s>"), eos = or_default(o.eos_token, "</s>");
  std::string out;
  for (size_t i = 0; i < rest.size(); ++i) {
    std::string content = rest[i].content;
    if (i == 0 && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    if (rest[i].role == "user") {
      if (i > 0) out += bos;
      out += "[INST] ";  // appended piece by piece: GCC 12 warns falsely on "literal" + temporary
      out += trim(content);
      out += " [/INST]";
    } else if (rest[i].role == "assistant") {
      out += ' ';
      out += trim(content);
      out += ' ' + eos;
    }
  }
  return out;
}

std::string render_llama3(const ChatTemplate& t, std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const auto header = [](const std::string& role) { return "<|start_header_id|>" + role + "<|end_header_id|>\n\n"; };
  std::string out;
  std::span<const ChatMessage> rest = messages;
  if (t.dated_system) {
    // Llama 3.1+ always writes a system turn: knowledge cut-off, date, then the system message.
    const auto split = split_system(messages);
    out += header("system") + "Cutting Knowledge Date: December 2023\nToday Date: " + o.date + "\n\n" + trim(split.system) +
           "<|eot_id|>";
    rest = split.rest;
  }
  for (const auto& m : rest) out += header(m.role) + trim(m.content) + "<|eot_id|>";
  if (o.add_generation_prompt) out += header("assistant");
  return out;
}

// Mistral's templates have no generation prompt: "[/INST]" is one.
std::string render_mistral(const ChatTemplate& t, std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const std::string eos = or_default(o.eos_token, "</s>");
  std::string out;
  if (t.mistral == MistralVersion::V7) {  // system messages stay where they are
    for (const auto& m : messages) {
      if (m.role == "system") out += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
      else if (m.role == "user") out += "[INST] " + m.content + "[/INST]";
      else if (m.role == "assistant") out += " " + m.content + eos;
    }
    return out;
  }
  const auto [has_system, system, rest] = split_system(messages);
  for (size_t i = 0; i < rest.size(); ++i) {
    const ChatMessage& m = rest[i];
    if (m.role == "user") {
      // v0.1 and v1 put the system message in the first turn; v3 in the last, and only when the
      // conversation ends with a user turn.
      const bool here =
          has_system && (t.mistral == MistralVersion::LEGACY || t.mistral == MistralVersion::V1 ? i == 0 : i + 1 == rest.size());
      const std::string content = (here ? system + "\n\n" : "") + m.content;
      switch (t.mistral) {
        case MistralVersion::LEGACY: out += "[INST] " + content + " [/INST]"; break;
        case MistralVersion::V1: out += " [INST] " + content + " [/INST]"; break;
        case MistralVersion::V3: out += "[INST] " + content + "[/INST]"; break;
        default: out += "[INST]" + content + "[/INST]"; break;
      }
    } else if (m.role == "assistant") {
      switch (t.mistral) {
        case MistralVersion::V1: out += " " + m.content + eos; break;
        case MistralVersion::V3: out += ' ' + (trim(m.content) + eos); break;
        default: out += m.content + eos; break;
      }
    }
  }
  return out;
}

std::string render_zephyr(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const std::string eos = or_default(o.eos_token, "</s>");
  std::string out;
  for (const auto& m : messages)
    if (m.role == "system" || m.role == "user" || m.role == "assistant") out += "<|" + m.role + "|>\n" + m.content + eos + "\n";
  if (o.add_generation_prompt) out += "<|assistant|>\n";
  return out;
}

std::string render_phi3(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  std::string out;
  for (const auto& m : messages) {
    if ((m.role == "system" && !m.content.empty()) || m.role == "user" || m.role == "assistant")
      out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
  }
  out += o.add_generation_prompt ? "<|assistant|>\n" : or_default(o.eos_token, "<|endoftext|>");
  return out;
}

std::string render_gemma(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const auto [has_system, system, rest] = split_system(messages);
  std::string out;
  for (size_t i = 0; i < rest.size(); ++i) {
    const std::string role = rest[i].role == "assistant" ? "model" : rest[i].role;
    out += "<start_of_turn>" + role + "\n" + (i == 0 && has_system ? system + "\n\n" : "") + trim(rest[i].content) +
           "<end_of_turn>\n";
  }
  if (o.add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

std::string render_deepseek_r1(const ChatTemplate& t, std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  std::string system;  // the template keeps the last system message and writes it first
  for (const auto& m : messages)
    if (m.role == "system") system = m.content;
  std::string out = system;
  for (const auto& m : messages) {
    if (m.role == "user") {
      out += kDsUser + m.content + (t.user_eos ? kDsEndOfSentence : "");
    } else if (m.role == "assistant") {
      // Earlier reasoning is not shown again.
      out += kDsAssistant;
      out += after_reasoning(m.content);
      out += kDsEndOfSentence;
    }
  }
  if (o.add_generation_prompt) out += kDsAssistant + std::string(t.think ? kOpenThink : "");
  return out;
}

std::string render_deepseek_coder(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  bool has_system = false;
  for (const auto& m : messages) has_system = has_system || m.role == "system";
  std::string out = has_system ? "" : kDeepseekCoderSystem;
  for (const auto& m : messages) {
    if (m.role == "system") out += m.content;
    else if (m.role == "user") out += "### Instruction:\n" + m.content + "\n";
    else out += "### Response:\n" + m.content + "\n<|EOT|>\n";
  }
  if (o.add_generation_prompt) out += "### Response:\n";
  return out;
}

std::string render_deepseek_v2(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const std::string eos = or_default(o.eos_token, kDsEndOfSentence);
  std::string out;
  for (const auto& m : messages) {
    if (m.role == "user") out += "User: " + m.content + "\n\n";
    else if (m.role == "assistant") out += "Assistant: " + m.content + eos;
    else if (m.role == "system") out += m.content + "\n\n";
  }
  if (o.add_generation_prompt) out += "Assistant:";
  return out;
}

std::string render_command_r(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  const auto turn = [](const char* who, const std::string& text) {
    return std::string("<|START_OF_TURN_TOKEN|><|") + who + "_TOKEN|>" + text + "<|END_OF_TURN_TOKEN|>";
  };
  const auto [has_system, system, rest] = split_system(messages);
  std::string out = has_system ? turn("SYSTEM", system) : "";
  for (const auto& m : rest) {
    if (m.role == "user") out += turn("USER", trim(m.content));
    else if (m.role == "assistant") out += turn("CHATBOT", trim(m.content));
    else if (m.role == "system") out += turn("SYSTEM", trim(m.content));
  }
  if (o.add_generation_prompt) out += "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
  return out;
}

std::string today_utc_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// OpenAI's gpt-oss template without tools: a system message of its own (identity, knowledge
// cut-off, date, reasoning effort, channels), the conversation's system message as the
// "developer" instructions, past answers on the final channel (their reasoning is not shown
// again), and the generation prompt "<|start|>assistant", after which the model names a channel.
std::string render_harmony(std::span<const ChatMessage> messages, const ChatRenderOptions& o) {
  std::string out = "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n";
  out += "Knowledge cutoff: 2024-06\nCurrent date: " + (o.iso_date.empty() ? today_utc_iso() : o.iso_date) + "\n\n";
  out += "Reasoning: " + o.reasoning_effort + "\n\n";
  out += "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>";
  const auto [has_system, system, rest] = split_system(messages);
  if (has_system && !system.empty()) out += "<|start|>developer<|message|># Instructions\n\n" + system + "\n\n<|end|>";
  for (const auto& m : rest) {
    if (m.role == "user") out += "<|start|>user<|message|>" + m.content + "<|end|>";
    else if (m.role == "assistant") out += "<|start|>assistant<|channel|>final<|message|>" + m.content + "<|end|>";
  }
  if (o.add_generation_prompt) out += "<|start|>assistant";
  return out;
}

}  // namespace

std::string_view chat_family_name(ChatFamily family) {
  switch (family) {
    case ChatFamily::CHATML: return "chatml";
    case ChatFamily::LLAMA2: return "llama2";
    case ChatFamily::LLAMA3: return "llama3";
    case ChatFamily::MISTRAL: return "mistral";
    case ChatFamily::ZEPHYR: return "zephyr";
    case ChatFamily::PHI3: return "phi3";
    case ChatFamily::GEMMA: return "gemma";
    case ChatFamily::DEEPSEEK_R1: return "deepseek-r1";
    case ChatFamily::DEEPSEEK_CODER: return "deepseek-coder";
    case ChatFamily::DEEPSEEK_V2: return "deepseek-v2";
    case ChatFamily::COMMAND_R: return "command-r";
    case ChatFamily::HARMONY: return "harmony";
  }
  return "chatml";
}

ChatTemplate detect_chat_template(std::string_view jinja) {
  const auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  ChatTemplate t;
  const auto set = [&](ChatFamily f, std::string name = {}) {
    t.family = f;
    t.name = name.empty() ? std::string(chat_family_name(f)) : std::move(name);
  };
  // Order matters: a template may mention another family's markers (a Llama 3 tool template
  // quoting "<|python_tag|>", ChatML inside a Llama-3-based model...); the most specific come first.
  if (has("<|start|>") && has("<|channel|>")) {
    set(ChatFamily::HARMONY);
  } else if (has("<|im_start|>")) {
    set(ChatFamily::CHATML);
    if (has(kQwenSystem)) {
      t.default_system = kQwenSystem;
      t.name = "chatml-qwen2.5";
    } else if (has(kSmolLmSystem)) {
      t.default_system = kSmolLmSystem;
      t.name = "chatml-smollm2";
    }
    // Qwen 3 and later, QwQ: the model reasons in <think> blocks, which earlier answers drop. The
    // generation prompt's literals tell the default (see ChatTemplate::think): '<think>\n' alone is
    // the open block (an `else` of Qwen 3.5's enable_thinking check, or all QwQ writes); Qwen 3.5
    // 0.8B/2B test `enable_thinking is true` and write the closed block otherwise.
    t.reasoning = has("</think>");
    t.think_off = has("enable_thinking is defined and enable_thinking is true");
    t.think = !t.think_off && (has("'<think>\\n'") || has("'<|im_start|>assistant\\n<think>\\n'"));
    t.thinking_switch = has("enable_thinking");
    if (t.think) t.name = "chatml-think";
    else if (t.think_off) t.name = "chatml-think-off";
    else if (t.reasoning) t.name = "chatml-reasoning";
  } else if (has("[INST]")) {
    if (has("<<SYS>>")) {
      set(ChatFamily::LLAMA2);
    } else if (has("[SYSTEM_PROMPT]")) {
      set(ChatFamily::MISTRAL, "mistral-v7");
      t.mistral = MistralVersion::V7;
    } else if (has("' [INST] ' + system_message")) {
      set(ChatFamily::MISTRAL, "mistral-v1");
      t.mistral = MistralVersion::V1;
    } else if (has("[AVAILABLE_TOOLS]")) {  // Mistral's official v3 templates
      const bool tekken = has("\"[INST]\"");
      set(ChatFamily::MISTRAL, tekken ? "mistral-v3-tekken" : "mistral-v3");
      t.mistral = tekken ? MistralVersion::V3_TEKKEN : MistralVersion::V3;
    } else {
      set(ChatFamily::MISTRAL, "mistral-legacy");
      t.mistral = MistralVersion::LEGACY;
    }
  } else if (has("<|start_header_id|>") && has("<|end_header_id|>")) {
    t.dated_system = has("Cutting Knowledge Date") && has("Today Date");
    set(ChatFamily::LLAMA3, t.dated_system ? "llama3.1" : "llama3");
  } else if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) {
    set(ChatFamily::COMMAND_R);
  } else if (has("<start_of_turn>")) {
    set(ChatFamily::GEMMA);
  } else if (has("<|user|>") && has("<|end|>")) {
    set(ChatFamily::PHI3);
  } else if (has("<|user|>") && has("<|assistant|>")) {
    set(ChatFamily::ZEPHYR);
  } else if (has(kDsUser) && has(kDsAssistant)) {
    set(ChatFamily::DEEPSEEK_R1);
    t.user_eos = has("'" + kDsUser + "' + message['content'] + '" + kDsEndOfSentence + "'");
    t.think = has(kDsAssistant + "<think>");
    if (t.user_eos) t.name = "deepseek-r1-user-eos";
  } else if (has("### Instruction:") && has("### Response:")) {
    set(ChatFamily::DEEPSEEK_CODER);
  } else if (has("'User: ' + message['content']") && has("'Assistant: ' + message['content']")) {
    set(ChatFamily::DEEPSEEK_V2);
  } else {
    t.fallback = true;  // ChatML: the most widely trained-on format
  }
  return t;
}

bool opens_think_block(const ChatTemplate& tmpl, const ChatRenderOptions& options) {
  switch (tmpl.family) {
    case ChatFamily::CHATML: return chatml_think_prompt(tmpl, options) == kOpenThink;
    case ChatFamily::DEEPSEEK_R1: return tmpl.think;
    default: return false;
  }
}

std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages, const ChatRenderOptions& options) {
  switch (tmpl.family) {
    case ChatFamily::CHATML: return render_chatml(tmpl, messages, options);
    case ChatFamily::LLAMA2: return render_llama2(messages, options);
    case ChatFamily::LLAMA3: return render_llama3(tmpl, messages, options);
    case ChatFamily::MISTRAL: return render_mistral(tmpl, messages, options);
    case ChatFamily::ZEPHYR: return render_zephyr(messages, options);
    case ChatFamily::PHI3: return render_phi3(messages, options);
    case ChatFamily::GEMMA: return render_gemma(messages, options);
    case ChatFamily::DEEPSEEK_R1: return render_deepseek_r1(tmpl, messages, options);
    case ChatFamily::DEEPSEEK_CODER: return render_deepseek_coder(messages, options);
    case ChatFamily::DEEPSEEK_V2: return render_deepseek_v2(messages, options);
    case ChatFamily::COMMAND_R: return render_command_r(messages, options);
    case ChatFamily::HARMONY: return render_harmony(messages, options);
  }
  return render_chatml(tmpl, messages, options);
}

}  // namespace hearth::runtime
