// Chat templates: the text a chat model expects around each message of a conversation.
//
// Models ship their format as a Jinja template (GGUF key tokenizer.chat_template). hearth runs no
// Jinja: it recognises the template's family by distinctive strings and writes that family's
// format by hand, reproducing what the template renders for plain system/user/assistant messages.
//
//   ChatTemplate t = detect_chat_template(file.metadata().get_string_opt("tokenizer.chat_template").value_or(""));
//   std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi!"}};
//   std::string prompt = render_chat(t, chat);          // then tokenize with parse_special = true
//
// BOS: the rendered text never starts with the BOS token's text. Templates that begin with
// {{ bos_token }} rely on BOS being the first token, and the tokenizer adds it (EncodeOptions.add_bos)
// when the vocabulary asks for it (tokenizer.ggml.add_bos_token), so it is never doubled. BOS or EOS
// texts that a template writes *inside* the conversation (Llama 2's "<s>" before each later turn,
// "</s>" after each answer) are part of the rendered text and become tokens with parse_special.
//
// Not reproduced: tools and function-calling sections, document/RAG sections, and the long
// tool-use preambles of templates made for tools (Hermes "tool_use", Command-R "tool_use",
// Functionary, FireFunction); those render as their family's plain chat format. Roles other than
// system/user/assistant are written as they are where the format names roles (ChatML, Llama 3,
// Gemma) and skipped elsewhere, as the templates do. Templates that refuse some conversations (roles
// not alternating, a system message Gemma 2 does not support) are not checked; a system message
// goes where the family's newer templates put it (Gemma: in front of the first turn).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace hearth::runtime {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatFamily {
  CHATML,          // <|im_start|>role ... <|im_end|>: Qwen, SmolLM, Hermes, OpenHermes...
  LLAMA2,          // [INST] <<SYS>> ... <</SYS>> ... [/INST]
  LLAMA3,          // <|start_header_id|>role<|end_header_id|> ... <|eot_id|>: Llama 3.x
  MISTRAL,         // [INST] ... [/INST] without <<SYS>>: Mistral, Mixtral, Mistral Nemo
  ZEPHYR,          // <|user|> ... </s>: Zephyr, TinyLlama-Chat
  PHI3,            // <|user|> ... <|end|>: Phi-3, Phi-3.5
  GEMMA,           // <start_of_turn>user ... <end_of_turn>: Gemma 1-3
  DEEPSEEK_R1,     // <｜User｜> ... <｜Assistant｜>: DeepSeek R1 and its distills, DeepSeek V3
  DEEPSEEK_CODER,  // ### Instruction: ... ### Response: ... <|EOT|>: DeepSeek Coder
  DEEPSEEK_V2,     // User: ... Assistant: ...: DeepSeek V2 / LLM chat
  COMMAND_R,       // <|START_OF_TURN_TOKEN|><|USER_TOKEN|>...: Cohere Command-R
  HARMONY,         // <|start|>role<|message|> ... <|end|>, answers on channels: gpt-oss (reply_filter.h)
};

// Mistral's formats differ in spaces and in where the system message goes.
enum class MistralVersion {
  LEGACY,     // Mistral 7B v0.1: "[INST] u [/INST]a</s>", system in the first user turn
  V1,         // " [INST] u [/INST] a</s>", system in the first user turn
  V3,         // "[INST] u[/INST] a</s>", system in the last user turn, answers trimmed
  V3_TEKKEN,  // "[INST]u[/INST]a</s>", system in the last user turn (Mistral Nemo)
  V7,         // "[SYSTEM_PROMPT] s[/SYSTEM_PROMPT][INST] u[/INST] a</s>"
};

struct ChatTemplate {
  ChatFamily family = ChatFamily::CHATML;
  std::string name = "chatml";  // family and variant, for logs: "llama3.1", "mistral-v3-tekken"...
  bool fallback = false;        // no template, or none hearth recognises: ChatML was chosen

  // Variants, read from the template text.
  std::string default_system;  // ChatML: system message used when the conversation has none
                               // (Qwen 2.5, SmolLM2)
  bool dated_system = false;   // Llama 3.1+: system turn always written, with knowledge cut-off and date
  MistralVersion mistral = MistralVersion::V3;
  bool user_eos = false;  // DeepSeek R1 (llama.cpp's template): user turns end with EOS too
  // Reasoning models. Qwen's templates switch thinking with enable_thinking, and differ in what
  // they do without it: Qwen 3 writes nothing (the model opens its own block), Qwen 3.5 (4B and
  // up), Qwen3 2507 Thinking and QwQ open the block, Qwen 3.5 0.8B/2B write it closed.
  bool think = false;      // the generation prompt opens "<think>\n" by default (DeepSeek R1: always)
  bool think_off = false;  // ChatML: the generation prompt closes an empty block by default
  bool thinking_switch = false;  // ChatML: the template reads enable_thinking (Qwen 3, 3.5)
  bool reasoning = false;  // ChatML of Qwen 3 and later: earlier answers are written without their
                           // <think> block (DeepSeek R1's always are)
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;  // end with the assistant's header, ready for the reply
  // Texts of the BOS and EOS tokens where a template writes them inside the conversation; empty
  // means the family's usual one ("<s>", "</s>", "<|endoftext|>", "<｜end▁of▁sentence｜>").
  std::string bos_token;
  std::string eos_token;
  std::string date = "26 Jul 2024";  // Llama 3.1+ "Today Date" (the templates' own default)
  // Harmony's "Current date" (YYYY-MM-DD); empty = today (UTC), as the template's strftime_now.
  std::string iso_date;
  std::string reasoning_effort = "medium";  // harmony: "low", "medium" or "high"
  // Qwen's enable_thinking: false writes the <think> block closed and empty, true asks a model
  // that does not think by default to; unset keeps the template's default.
  std::optional<bool> thinking;
};

// Recognises a tokenizer.chat_template's family; an empty or unknown template gives ChatML
// with fallback = true.
ChatTemplate detect_chat_template(std::string_view jinja);

// Whether the generation prompt ends inside an open <think> block: the reply starts with reasoning.
bool opens_think_block(const ChatTemplate& tmpl, const ChatRenderOptions& options);

// The prompt text for `messages` in the template's format (without a leading BOS, see above).
std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages, const ChatRenderOptions& options = {});

std::string_view chat_family_name(ChatFamily family);

}  // namespace hearth::runtime
