import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { showValue, UserError } from '../core/errors.js';
import { kv, type GgufKV } from './gguf.js';
import { readJsonObject } from '../core/json-file.js';

/**
 * A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) → llama.cpp's tokenizer metadata.
 *
 * Three families are supported; the first two as llama.cpp's own converter handles them:
 * - SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, stories260k): `tokenizer.ggml.model =
 *   llama`, with per-token scores (llama.cpp merges the adjacent pair whose result scores highest; the scores
 *   are derived from the merge ranks, so the merge order is the one the Hugging Face tokenizer uses) and the
 *   256 `<0xXX>` byte tokens (without them llama.cpp aborts on characters outside the vocabulary).
 * - Byte-level BPE (GPT-2 style: Llama 3, Qwen 2/2.5/3, SmolLM): `tokenizer.ggml.model = gpt2` with the
 *   merges, and a `tokenizer.ggml.pre` name telling llama.cpp which pre-tokenizer regex to run. llama.cpp's
 *   converter recognises the pre-tokenizer by hashing a test tokenization; here it is recognised by the
 *   pre-tokenizer's definition in tokenizer.json (the split regex), which names the same thing.
 * - Character-level (the engine's build_char_tokenizer, which `distillery demo` trains with: a BPE model without
 *   merges behind a pre-tokenizer that splits every character): also `gpt2`, each character stored in byte-level
 *   form and no merges, so llama.cpp reads each character as its one token; ids and vocabulary size unchanged.
 */

/** llama.cpp's token types (llama_token_type / gguf.TokenType). */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface GgufTokenizer {
  model: 'llama' | 'gpt2';
  /** tokenizer.ggml.pre: the pre-tokenizer llama.cpp applies ('default' for SentencePiece-style). */
  pre: string;
  tokens: string[];
  tokenTypes: Int32Array;
  /** SentencePiece-style only. */
  scores: Float32Array | null;
  /** Byte-level BPE only: "left right" pairs, in rank order. */
  merges: string[] | null;
  bos: number | null;
  eos: number | null;
  unk: number | null;
  pad: number | null;
  addBos: boolean | null;
  addEos: boolean | null;
  /** SentencePiece-style: whether a space is put before the text (the "▁" prefix). */
  addSpacePrefix: boolean | null;
  chatTemplate: string | null;
  /** Things worth telling the person exporting (e.g. a normalizer llama.cpp does not apply). */
  notes: string[];
}

/** The pre-tokenizer split regexes llama.cpp knows, as they appear in tokenizer.json, with llama.cpp's names. */
const BYTE_LEVEL_SPLITS: ReadonlyArray<{ name: string; regex: string; family: string }> = [
  {
    name: 'llama-bpe',
    family: 'Llama 3',
    regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  },
  {
    name: 'qwen2',
    family: 'Qwen 2/2.5/3',
    regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  },
];

export const SUPPORTED_TOKENIZERS =
  'SentencePiece-style BPE with byte fallback (Llama 2 style, tokenizer.json), and byte-level BPE with the ' +
  `${BYTE_LEVEL_SPLITS.map((s) => `${s.family} (${s.name})`).join(', ')}, GPT-2 (gpt-2) or SmolLM (smollm) pre-tokenizer, ` +
  'and character-level BPE (no merges, a Split("") pre-tokenizer, one character per token: the engine\'s demo tokenizer)';

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function unsupported(dir: string, why: string): UserError {
  return new UserError(`cannot export the tokenizer of ${dir} to GGUF: ${why}`, `supported: ${SUPPORTED_TOKENIZERS}`);
}

/** The components of a pre-tokenizer or normalizer (a Sequence's items, or the one item). */
function parts(v: unknown, key: 'pretokenizers' | 'normalizers' | 'processors' | 'decoders'): Json[] {
  if (!isObj(v)) return [];
  if (v.type === 'Sequence' && Array.isArray(v[key])) return (v[key] as unknown[]).filter(isObj);
  return [v];
}

/** Does this added token look like a control token although not marked special (as llama.cpp's converter checks)? */
function looksSpecial(t: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
    (t.startsWith('<|') && t.endsWith('|>')) ||
    (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'))
  );
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

/**
 * Reads the tokenizer in `dir`. `vocabSize` (config.json's vocab_size, the embedding's row count) pads the
 * token list with unused `[PADn]` entries, as llama.cpp's converter does; a tokenizer with ids beyond it is
 * refused.
 */
export function readHfTokenizer(dir: string, vocabSize: number | null): GgufTokenizer {
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokPath)) {
    const spm = existsSync(join(dir, 'tokenizer.model'));
    throw new UserError(
      `${dir} has no tokenizer.json${spm ? ' (only a SentencePiece tokenizer.model)' : ''}: GGUF export needs the tokenizer`,
      spm
        ? 'save the fast tokenizer next to the model (AutoTokenizer.from_pretrained(...).save_pretrained(dir) writes tokenizer.json)'
        : 'copy the tokenizer files (tokenizer.json, tokenizer_config.json) of the model into the folder',
    );
  }
  const tj = readJsonObject(tokPath);
  const cfgPath = join(dir, 'tokenizer_config.json');
  const tc = existsSync(cfgPath) ? readJsonObject(cfgPath) : {};
  const mcPath = join(dir, 'config.json');
  const mc = existsSync(mcPath) ? readJsonObject(mcPath) : {};
  const model = tj.model;
  if (!isObj(model)) throw unsupported(dir, 'tokenizer.json has no model');
  if (model.type !== 'BPE') throw unsupported(dir, `its model type is ${showValue(model.type)}, not BPE`);
  if (!isObj(model.vocab)) throw unsupported(dir, 'tokenizer.json has no vocabulary');

  // Ids → token strings: the model's vocabulary, then the added tokens (which win where both name an id).
  const byId = new Map<number, string>();
  for (const [tok, id] of Object.entries(model.vocab)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw unsupported(dir, `token ${showValue(tok)} has an invalid id ${showValue(id)}`);
    byId.set(id as number, tok);
  }
  const added: AddedToken[] = [];
  for (const a of Array.isArray(tj.added_tokens) ? tj.added_tokens : []) {
    if (!isObj(a) || !Number.isSafeInteger(a.id) || (a.id as number) < 0 || typeof a.content !== 'string') {
      throw unsupported(dir, `invalid added token ${showValue(a)}`);
    }
    added.push({ id: a.id as number, content: a.content, special: a.special === true });
    byId.set(a.id as number, a.content);
  }
  let maxId = -1;
  for (const id of byId.keys()) if (id > maxId) maxId = id;
  if (vocabSize !== null && maxId >= vocabSize) {
    throw new UserError(`the tokenizer of ${dir} has token id ${maxId}, but the model's vocabulary (config.json vocab_size) has only ${vocabSize} entries`);
  }
  const n = Math.max(vocabSize ?? 0, maxId + 1);
  const tokens: string[] = new Array<string>(n);
  const tokenTypes = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const t = byId.get(i);
    if (t === undefined || t === '') {
      tokens[i] = `[PAD${i}]`;
      tokenTypes[i] = TOKEN_TYPE.UNUSED;
    } else {
      tokens[i] = t;
      tokenTypes[i] = TOKEN_TYPE.NORMAL;
    }
  }
  const idOf = new Map<string, number>();
  for (let i = n - 1; i >= 0; i--) idOf.set(tokens[i]!, i);
  for (const a of added) idOf.set(a.content, a.id);

  const special = (name: 'bos' | 'eos' | 'unk' | 'pad'): number | null => {
    const v = tc[`${name}_token`];
    const content = typeof v === 'string' ? v : isObj(v) && typeof v.content === 'string' ? v.content : null;
    if (content !== null) {
      const id = idOf.get(content);
      if (id !== undefined) return id;
    }
    let c = mc[`${name}_token_id`];
    if (Array.isArray(c)) c = c[0];
    return Number.isSafeInteger(c) && (c as number) >= 0 && (c as number) < n ? (c as number) : null;
  };

  const notes: string[] = [];
  const merges = mergePairs(dir, model.merges);
  const byteFallback = model.byte_fallback === true;
  const preParts = parts(tj.pre_tokenizer, 'pretokenizers');
  const normParts = parts(tj.normalizer, 'normalizers');
  const unk = special('unk');
  let result: Pick<GgufTokenizer, 'model' | 'pre' | 'scores' | 'merges' | 'addSpacePrefix'>;

  const charSplit = !byteFallback && merges.length === 0 && splitsEveryCharacter(tj.pre_tokenizer);
  if (charSplit) {
    // Character-level (the engine's build_char_tokenizer): every character is one token, the rest <unk>.
    const r = characterLevel(dir, model, added, normParts, tj.decoder, tokens);
    notes.push(...r.notes);
    result = { model: 'gpt2', pre: CHAR_LEVEL_PRE, scores: null, merges: r.merges, addSpacePrefix: null };
  } else if (byteFallback) {
    // SentencePiece-style: "▁" for spaces, byte tokens for anything outside the vocabulary.
    for (let b = 0; b < 256; b++) {
      const name = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      const id = idOf.get(name);
      if (id === undefined) throw unsupported(dir, `it uses byte fallback but has no byte token ${name} (llama.cpp needs all 256)`);
      tokenTypes[id] = TOKEN_TYPE.BYTE;
    }
    if (unk !== null) tokenTypes[unk] = TOKEN_TYPE.UNKNOWN;
    for (const p of preParts) {
      if (p.type !== 'Metaspace') throw unsupported(dir, `pre-tokenizer ${showValue(p.type)} in a SentencePiece-style tokenizer`);
    }
    for (const p of normParts) {
      if (!['Prepend', 'Replace', 'NFC', 'NFKC'].includes(String(p.type))) throw unsupported(dir, `normalizer ${showValue(p.type)} in a SentencePiece-style tokenizer`);
      if (p.type === 'NFC' || p.type === 'NFKC') {
        notes.push(`the tokenizer ${p.type}-normalizes text and llama.cpp does not: text not already in that form may tokenize differently`);
      }
    }
    const prepends =
      normParts.some((p) => p.type === 'Prepend' && p.prepend === '▁') ||
      preParts.some((p) => p.type === 'Metaspace' && (p.prepend_scheme === 'always' || p.prepend_scheme === 'first' || p.add_prefix_space === true));
    // llama.cpp merges the adjacent pair whose result has the highest score: score each piece by the rank
    // of the first merge that makes it, so merges happen in the tokenizer's own order.
    const scores = new Float32Array(n);
    const seen = new Uint8Array(n);
    merges.forEach((m, rank) => {
      const sp = m.indexOf(' ', 1);
      const id = idOf.get(m.slice(0, sp) + m.slice(sp + 1));
      if (id !== undefined && !seen[id]) {
        seen[id] = 1;
        scores[id] = rank === 0 ? 0 : -rank;
      }
    });
    for (let i = 0; i < n; i++) {
      // A longer piece no merge makes is never produced by the Hugging Face tokenizer: rank it last.
      if (!seen[i] && tokenTypes[i] === TOKEN_TYPE.NORMAL && [...tokens[i]!].length > 1) scores[i] = -1e9;
    }
    result = { model: 'llama', pre: 'default', scores, merges: null, addSpacePrefix: prepends };
  } else {
    const pre = byteLevelPre(dir, preParts);
    for (const p of normParts) {
      if (p.type === 'NFC') {
        notes.push('the tokenizer NFC-normalizes text and llama.cpp does not: text that is not already in NFC form may tokenize differently');
      } else {
        throw unsupported(dir, `normalizer ${showValue(p.type)} in a byte-level BPE tokenizer`);
      }
    }
    result = { model: 'gpt2', pre, scores: null, merges, addSpacePrefix: null };
  }

  // Added tokens: special ones are control tokens; the others are matched as written (user-defined).
  for (const a of added) {
    if (a.id === unk && result.model === 'llama') continue;
    if (a.special || looksSpecial(a.content)) {
      tokenTypes[a.id] = TOKEN_TYPE.CONTROL;
    } else {
      tokenTypes[a.id] = TOKEN_TYPE.USER_DEFINED;
      tokens[a.id] = a.content.replaceAll('▁', ' ');
    }
  }

  // llama.cpp aborts the process (an assertion, not an error) on two tokens with the same text: keep the
  // first, and mark later copies unused under a unique name.
  const firstId = new Map<string, number>();
  const dups: string[] = [];
  for (let i = 0; i < n; i++) {
    const prev = firstId.get(tokens[i]!);
    if (prev === undefined) {
      firstId.set(tokens[i]!, i);
      continue;
    }
    dups.push(`${showValue(tokens[i])} (ids ${prev} and ${i})`);
    tokens[i] = `[DUPLICATE${i}]`;
    tokenTypes[i] = TOKEN_TYPE.UNUSED;
  }
  if (dups.length > 0) {
    notes.push(`the vocabulary names ${dups.length} token(s) twice (${dups.slice(0, 3).join(', ')}${dups.length > 3 ? ', …' : ''}); llama.cpp cannot load duplicates, so the later id of each is kept as an unused token`);
  }

  const post = postProcessorSpecials(tj.post_processor, idOf);
  const addBos = typeof tc.add_bos_token === 'boolean' ? tc.add_bos_token : post.addBos;
  const addEos = typeof tc.add_eos_token === 'boolean' ? tc.add_eos_token : post.addEos;
  let bos = special('bos');
  if (bos === null && post.bosId !== null) bos = post.bosId;
  if (addBos && bos === null) throw unsupported(dir, 'it adds a BOS token but names none (bos_token)');
  return {
    ...result,
    tokens,
    tokenTypes,
    bos,
    eos: special('eos'),
    unk,
    pad: special('pad'),
    addBos,
    addEos,
    chatTemplate: chatTemplateIn(dir, tc),
    notes,
  };
}

/** Merges as "left right" strings (tokenizer.json has either that or [left, right] pairs). */
function mergePairs(dir: string, merges: unknown): string[] {
  if (merges === undefined || merges === null) return [];
  if (!Array.isArray(merges)) throw unsupported(dir, 'tokenizer.json merges is not a list');
  return merges.map((m) => {
    if (typeof m === 'string' && m.indexOf(' ', 1) > 0) return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string' && m[0] !== '') {
      if (m[0].includes(' ')) throw unsupported(dir, `merge ${showValue(m)} has a space inside its first token, which llama.cpp's merge format cannot hold`);
      return `${m[0]} ${m[1]}`;
    }
    throw unsupported(dir, `invalid merge ${showValue(m)}`);
  });
}

/** llama.cpp's name for a byte-level pre-tokenizer. */
function byteLevelPre(dir: string, p: Json[]): string {
  const isByteLevel = (x: Json | undefined, regex: boolean) => x?.type === 'ByteLevel' && (x.use_regex !== false) === regex;
  if (p.length === 1 && isByteLevel(p[0], true)) return 'gpt-2';
  if (p.length === 2 && p[0]!.type === 'Digits' && p[0]!.individual_digits === true && isByteLevel(p[1], true)) return 'smollm';
  if (p.length === 2 && p[0]!.type === 'Split' && isByteLevel(p[1], false)) {
    const s = p[0]!;
    const regex = isObj(s.pattern) ? s.pattern.Regex : undefined;
    if (s.behavior === 'Isolated' && s.invert !== true && typeof regex === 'string') {
      const known = BYTE_LEVEL_SPLITS.find((k) => k.regex === regex);
      if (known) return known.name;
      throw unsupported(dir, `its pre-tokenizer splits with a regex llama.cpp's converter does not know: ${showValue(regex, 300)}`);
    }
  }
  if (!p.some((x) => x.type === 'ByteLevel')) throw unsupported(dir, 'it is a BPE tokenizer without byte fallback or byte-level pre-tokenization');
  throw unsupported(dir, `unrecognised pre-tokenizer ${showValue(p.map((x) => x.type))}`);
}

/**
 * The GGUF pre-tokenizer for character-level vocabularies. Its split regex cannot change the result (with no
 * merges across characters, every character stays one symbol however the text is split), and unlike `gpt-2` or
 * `default` it leaves llama.cpp's clean_up_tokenization_spaces off, which would drop the space in " ." / " ,"
 * when decoding. llama.cpp runs it with a hand-written splitter (no std::regex, whose recursion can overflow the
 * stack on long inputs).
 */
const CHAR_LEVEL_PRE = 'qwen2';

/** GPT-2's bytes_to_unicode: byte → the printable character byte-level BPE vocabularies store it as. */
const BYTE_TO_UNICODE: readonly string[] = (() => {
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out.push(String.fromCodePoint(printable ? b : 256 + n++));
  }
  return out;
})();

/** Text in byte-level form (its UTF-8 bytes through bytes_to_unicode): ' ' → 'Ġ', '\n' → 'Ċ', 'é' → 'Ã©'. */
export function byteLevelText(text: string): string {
  let s = '';
  for (const b of Buffer.from(text, 'utf8')) s += BYTE_TO_UNICODE[b];
  return s;
}

/** Does the pre-tokenizer cut text into single characters: Split on "" (isolated), or none at all? */
function splitsEveryCharacter(pre: unknown): boolean {
  if (pre === null || pre === undefined) return true;
  const p = parts(pre, 'pretokenizers');
  const s = p[0];
  return p.length === 1 && s!.type === 'Split' && isObj(s!.pattern) && s!.pattern.String === '' && s!.behavior === 'Isolated' && s!.invert !== true;
}

/**
 * A character-level tokenizer (a BPE model without merges whose pre-tokenizer splits every character, as the
 * engine's build_char_tokenizer writes) as a byte-level BPE vocabulary: each character token is stored in
 * byte-level form, so llama.cpp's byte-level BPE reads every character of the alphabet as that one token. A
 * character of several UTF-8 bytes gets merges joining its bytes back (they can only apply inside a
 * character, as a continuation byte never starts one). The vocabulary and its ids stay as they are. Sets the
 * tokens' texts in `tokens`; returns the merges and notes.
 */
function characterLevel(dir: string, model: Json, added: AddedToken[], normParts: Json[], decoder: unknown, tokens: string[]): { merges: string[]; notes: string[] } {
  if (normParts.length > 0) throw unsupported(dir, `normalizer ${showValue(normParts.map((p) => p.type))} in a character-level tokenizer`);
  for (const k of ['continuing_subword_prefix', 'end_of_word_suffix']) {
    if (typeof model[k] === 'string' && model[k] !== '') throw unsupported(dir, `a character-level tokenizer with ${k} ${showValue(model[k])}`);
  }
  const addedIds = new Set(added.map((a) => a.id));
  const unkToken = typeof model.unk_token === 'string' ? model.unk_token : null;
  const merges = new Set<string>();
  for (const [tok, id] of Object.entries(model.vocab as Record<string, number>)) {
    if (addedIds.has(id) || tok === unkToken) continue;
    if ([...tok].length !== 1) {
      throw unsupported(dir, `it has no merges and its pre-tokenizer splits every character, but token ${showValue(tok)} (id ${id}) is not one character`);
    }
    const symbols = [...byteLevelText(tok)];
    tokens[id] = symbols.join('');
    for (let j = 1; j < symbols.length; j++) merges.add(`${symbols.slice(0, j).join('')} ${symbols[j]}`);
  }
  const notes: string[] = [];
  if (unkToken !== null) {
    notes.push(`character-level tokenizer: llama.cpp drops characters outside the vocabulary, where the Hugging Face tokenizer gives ${unkToken}`);
  }
  const dec = parts(decoder, 'decoders');
  if (dec.length === 0 || dec.some((d) => d.type !== 'Fuse')) {
    notes.push(`llama.cpp decodes the characters by concatenating them; this tokenizer's decoder (${dec.length === 0 ? 'none: Hugging Face joins tokens with spaces' : showValue(dec.map((d) => d.type))}) may decode differently`);
  }
  return { merges: [...merges], notes };
}

/** What the post-processor adds around a single sequence: BOS / EOS tokens (TemplateProcessing). */
function postProcessorSpecials(pp: unknown, idOf: Map<string, number>): { addBos: boolean; addEos: boolean; bosId: number | null } {
  const out = { addBos: false, addEos: false, bosId: null as number | null };
  for (const p of parts(pp, 'processors')) {
    if (p.type === 'TemplateProcessing' && Array.isArray(p.single)) {
      const single = p.single as unknown[];
      const specialId = (item: unknown): number | null => {
        if (!isObj(item) || !isObj(item.SpecialToken)) return null;
        const name = item.SpecialToken.id;
        const sp = isObj(p.special_tokens) && typeof name === 'string' ? p.special_tokens[name] : undefined;
        const ids = isObj(sp) && Array.isArray(sp.ids) ? sp.ids : null;
        if (ids && Number.isSafeInteger(ids[0])) return ids[0] as number;
        return typeof name === 'string' ? idOf.get(name) ?? null : null;
      };
      const first = specialId(single[0]);
      if (first !== null) {
        out.addBos = true;
        out.bosId = first;
      }
      if (single.length > 1 && specialId(single[single.length - 1]) !== null) out.addEos = true;
    } else if (p.type === 'BertProcessing' || p.type === 'RobertaProcessing') {
      out.addBos = out.addEos = true;
    }
  }
  return out;
}

/** chat_template.jinja (transformers ≥ 4.50 writes it there), else tokenizer_config.json's chat_template. */
function chatTemplateIn(dir: string, tc: Json): string | null {
  const file = join(dir, 'chat_template.jinja');
  if (existsSync(file)) return readFileSync(file, 'utf8');
  const t = tc.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.filter((x): x is { name?: unknown; template: string } => isObj(x) && typeof x.template === 'string');
    return (named.find((x) => x.name === 'default') ?? named[0])?.template ?? null;
  }
  return null;
}

/** The tokenizer as GGUF metadata (tokenizer.ggml.* and tokenizer.chat_template). */
export function tokenizerMetadata(t: GgufTokenizer): GgufKV[] {
  const out: GgufKV[] = [
    kv.string('tokenizer.ggml.model', t.model),
    kv.string('tokenizer.ggml.pre', t.pre),
    kv.array('tokenizer.ggml.tokens', 'string', t.tokens),
  ];
  if (t.scores) out.push(kv.array('tokenizer.ggml.scores', 'float32', t.scores));
  out.push(kv.array('tokenizer.ggml.token_type', 'int32', t.tokenTypes));
  if (t.merges) out.push(kv.array('tokenizer.ggml.merges', 'string', t.merges));
  const ids: Array<[string, number | null]> = [
    ['bos_token_id', t.bos], ['eos_token_id', t.eos], ['unknown_token_id', t.unk], ['padding_token_id', t.pad],
  ];
  for (const [k, v] of ids) if (v !== null) out.push(kv.uint32(`tokenizer.ggml.${k}`, v));
  if (t.addBos !== null) out.push(kv.bool('tokenizer.ggml.add_bos_token', t.addBos));
  if (t.addEos !== null) out.push(kv.bool('tokenizer.ggml.add_eos_token', t.addEos));
  if (t.addSpacePrefix !== null) out.push(kv.bool('tokenizer.ggml.add_space_prefix', t.addSpacePrefix));
  if (t.chatTemplate !== null) out.push(kv.string('tokenizer.chat_template', t.chatTemplate));
  return out;
}
