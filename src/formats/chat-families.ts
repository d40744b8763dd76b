/**
 * Chat-template families, recognised by the control tokens of a Jinja chat template, with the equivalent Ollama
 * (Go text/template) prompt template and stop strings. Used where a model leaves Distillery for Ollama: the
 * mirror's generated manifests and `distillery export --for ollama`.
 */

export interface OllamaTemplate {
  family: string;
  /** An Ollama (Go text/template) prompt template. */
  template: string;
  stop: string[];
}

/**
 * The Ollama template for a Jinja chat template, recognised by the control tokens its family uses. A Jinja
 * template cannot be translated in general; for unknown families no template layer is sent and Ollama falls
 * back to its default (`{{ .Prompt }}`), which docs/mirror.md states.
 */
export function templateFor(chatTemplate: string | null): OllamaTemplate | null {
  if (!chatTemplate) return null;
  if (chatTemplate.includes('<|im_start|>')) {
    return {
      family: 'chatml',
      template: '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n',
      stop: ['<|im_start|>', '<|im_end|>'],
    };
  }
  if (chatTemplate.includes('<|start_header_id|>')) {
    return {
      family: 'llama3',
      template: '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n',
      stop: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
    };
  }
  if (chatTemplate.includes('<start_of_turn>')) {
    return {
      family: 'gemma',
      template: '{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n',
      stop: ['<start_of_turn>', '<end_of_turn>'],
    };
  }
  if (chatTemplate.includes('[INST]')) {
    return {
      family: 'mistral',
      template: '{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]{{ else if eq .Role "assistant" }}{{ .Content }}</s>{{ end }}{{ end }}',
      stop: ['[INST]', '[/INST]'],
    };
  }
  return null;
}

/**
 * The default chat template of a tokenizer_config.json `chat_template` value: a string, or a list of named
 * templates (the one named "default", else the first), as transformers picks it; null otherwise.
 */
export function pickChatTemplate(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.filter((t): t is { name: string; template: string } => typeof t?.name === 'string' && typeof t?.template === 'string');
    return (named.find((t) => t.name === 'default') ?? named[0])?.template ?? null;
  }
  return null;
}
