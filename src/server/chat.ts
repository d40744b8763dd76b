import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { ggufInteger, ggufKV, ggufString, readGgufHeader } from '../formats/gguf.js';
import { badRequest } from './openai-types.js';
import type { ChatMessage } from './openai-types.js';
import { readJsonObjectOrNull } from '../core/json-file.js';
import { pickChatTemplate } from '../formats/chat-families.js';

/**
 * Chat templates: the Jinja template a model was trained with turns messages into one prompt string.
 * Hugging Face models carry it in tokenizer_config.json (or chat_template.jinja / chat_template.json);
 * GGUF files in `tokenizer.chat_template`. Rendered here with @huggingface/jinja for both backends, with the
 * assistant turn opened (add_generation_prompt), exactly as transformers' apply_chat_template renders it;
 * the template writes the special tokens itself, so the backend tokenizes the result without adding any.
 */

export interface ChatTemplate {
  /** Where it came from, for messages. */
  origin: string;
  render(messages: ChatMessage[], kwargs?: Record<string, unknown>): string;
}

/** Builds a template; a template that does not parse is reported as `problem` (chat requests then fail clearly). */
export function compileChatTemplate(source: string, specials: { bos: string; eos: string }, origin: string): ChatTemplate {
  const template = new Template(source);
  return {
    origin,
    render(messages, kwargs = {}) {
      try {
        return template.render({
          ...kwargs,
          messages: messages.map((m) => ({ ...m })),
          add_generation_prompt: true,
          bos_token: specials.bos,
          eos_token: specials.eos,
        });
      } catch (e) {
        // raise_exception() in a template is how it refuses a conversation (e.g. roles must alternate).
        throw badRequest(`the model's chat template refused these messages: ${(e as Error).message}`, 'messages');
      }
    },
  };
}

/** A special token as tokenizer_config.json writes it: a string, or {"content": …}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** The default template from a tokenizer_config `chat_template` value (a string, or a list of named ones). */
export type TemplateLookup = { template: ChatTemplate } | { template: null; reason: string };

/** The chat template of a Hugging Face model folder. */
export function hfChatTemplate(dir: string): TemplateLookup {
  const config = readJsonObjectOrNull(join(dir, 'tokenizer_config.json')) ?? {};
  let source: string | null = null;
  let origin = '';
  const jinjaFile = join(dir, 'chat_template.jinja');
  if (existsSync(jinjaFile)) {
    source = readFileSync(jinjaFile, 'utf8');
    origin = 'chat_template.jinja';
  } else if (pickChatTemplate(config.chat_template) !== null) {
    source = pickChatTemplate(config.chat_template);
    origin = 'tokenizer_config.json';
  } else {
    const json = readJsonObjectOrNull(join(dir, 'chat_template.json'));
    source = pickChatTemplate(json?.chat_template);
    origin = 'chat_template.json';
  }
  if (source === null) return { template: null, reason: 'it has no chat template (tokenizer_config.json has no chat_template)' };
  const specialsMap = readJsonObjectOrNull(join(dir, 'special_tokens_map.json')) ?? {};
  const bos = tokenText(config.bos_token) ?? tokenText(specialsMap.bos_token) ?? '';
  const eos = tokenText(config.eos_token) ?? tokenText(specialsMap.eos_token) ?? '';
  return compileOrExplain(source, { bos, eos }, origin);
}

/** The chat template of a GGUF file (`tokenizer.chat_template`, with BOS/EOS spelled from its vocabulary). */
export async function ggufChatTemplate(path: string): Promise<TemplateLookup> {
  const header = await readGgufHeader(path);
  const source = ggufString(header, 'tokenizer.chat_template');
  if (source === null) return { template: null, reason: 'its GGUF file has no tokenizer.chat_template' };
  const tokens = ggufKV(header, 'tokenizer.ggml.tokens');
  const spell = (key: string): string => {
    const id = ggufInteger(header, key);
    if (id === null || !tokens || tokens.type !== 'array') return '';
    const item = (tokens.value as { items?: ArrayLike<unknown> }).items?.[id];
    return typeof item === 'string' ? item : '';
  };
  return compileOrExplain(source, { bos: spell('tokenizer.ggml.bos_token_id'), eos: spell('tokenizer.ggml.eos_token_id') }, 'tokenizer.chat_template');
}

function compileOrExplain(source: string, specials: { bos: string; eos: string }, origin: string): TemplateLookup {
  try {
    return { template: compileChatTemplate(source, specials, origin) };
  } catch (e) {
    return { template: null, reason: `its chat template (${origin}) does not parse: ${(e as Error).message}` };
  }
}
