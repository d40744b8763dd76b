/**
 * Instruction-following probes a program can verify: each prompt states one constraint on the form of the reply
 * and carries the check for it. Only the form is scored (the constraint), not the content.
 *
 * Licence: written for Distillery by its authors and released under the project's MIT licence.
 */
export type InstructionCheck =
  | { type: 'words_exactly'; n: number }
  | { type: 'max_words'; n: number }
  | { type: 'uppercase' }
  | { type: 'lowercase' }
  | { type: 'include_word'; word: string }
  | { type: 'exclude_word'; word: string }
  | { type: 'json_key'; key: string }
  | { type: 'starts_with'; prefix: string }
  | { type: 'ends_with'; suffix: string }
  | { type: 'number_only' }
  | { type: 'bullets'; n: number }
  | { type: 'no_commas' }
  | { type: 'quoted' };

export interface InstructionProbe {
  id: string;
  question: string;
  check: InstructionCheck;
  difficulty: 1 | 2 | 3;
}

const I = (id: string, difficulty: 1 | 2 | 3, question: string, check: InstructionCheck): InstructionProbe => ({ id: `if-${id}`, question, check, difficulty });

export const INSTRUCTIONS: readonly InstructionProbe[] = [
  I('words3-colours', 2, 'Name three colours. Answer in exactly 3 words.', { type: 'words_exactly', n: 3 }),
  I('words2-animal', 2, 'Describe a cat in exactly 2 words.', { type: 'words_exactly', n: 2 }),
  I('words1-fruit', 1, 'Name one fruit. Answer in exactly 1 word.', { type: 'words_exactly', n: 1 }),
  I('words5-weather', 3, 'Describe today\'s weather in exactly 5 words.', { type: 'words_exactly', n: 5 }),
  I('max4-ocean', 2, 'What is an ocean? Answer in at most 4 words.', { type: 'max_words', n: 4 }),
  I('max6-sleep', 2, 'Why do people sleep? Answer in at most 6 words.', { type: 'max_words', n: 6 }),
  I('upper-cold', 1, 'What is the opposite of cold? Reply in uppercase letters only.', { type: 'uppercase' }),
  I('upper-greeting', 1, 'Write a short greeting. Use only capital letters.', { type: 'uppercase' }),
  I('upper-tree', 2, 'Write one sentence about a tree, entirely in uppercase.', { type: 'uppercase' }),
  I('lower-city', 1, 'Name a large city. Reply in lowercase letters only.', { type: 'lowercase' }),
  I('lower-sentence', 2, 'Write one sentence about rain, using only lowercase letters.', { type: 'lowercase' }),
  I('include-harbour', 2, 'Write one sentence about the sea that includes the word "harbour".', { type: 'include_word', word: 'harbour' }),
  I('include-lantern', 2, 'Write one sentence about the night that includes the word "lantern".', { type: 'include_word', word: 'lantern' }),
  I('include-purple', 1, 'Write a sentence that contains the word "purple".', { type: 'include_word', word: 'purple' }),
  I('exclude-the', 3, 'Describe a dog in one sentence without using the word "the".', { type: 'exclude_word', word: 'the' }),
  I('exclude-good', 3, 'Say something nice about breakfast without using the word "good".', { type: 'exclude_word', word: 'good' }),
  I('json-colour', 2, 'Answer with a JSON object with the key "colour" giving the colour of grass.', { type: 'json_key', key: 'colour' }),
  I('json-name', 2, 'Reply with a JSON object that has a key "name" set to any first name.', { type: 'json_key', key: 'name' }),
  I('json-count', 3, 'Return a JSON object with the key "count" holding the number of wheels on a bicycle.', { type: 'json_key', key: 'count' }),
  I('start-yes', 1, 'Is water wet? Start your reply with "Yes,".', { type: 'starts_with', prefix: 'Yes,' }),
  I('start-dear', 2, 'Write a one-line note to a friend. Begin your reply with "Dear".', { type: 'starts_with', prefix: 'Dear' }),
  I('end-done', 2, 'Describe making tea in one sentence. End your reply with the word "done".', { type: 'ends_with', suffix: 'done' }),
  I('end-question', 2, 'Write a question about the Moon. Your reply must end with a question mark.', { type: 'ends_with', suffix: '?' }),
  I('number-week', 1, 'How many days are in a week? Reply with only a number.', { type: 'number_only' }),
  I('number-dozen', 1, 'How many eggs are in a dozen? Reply with just the number, nothing else.', { type: 'number_only' }),
  I('number-hands', 1, 'How many hands does a person usually have? Answer with only a number.', { type: 'number_only' }),
  I('bullets3-fruits', 2, 'List exactly 3 fruits as a bulleted list, one per line, each line starting with "- ".', { type: 'bullets', n: 3 }),
  I('bullets2-tools', 2, 'List exactly 2 tools as a bulleted list, one per line, each line starting with "- ".', { type: 'bullets', n: 2 }),
  I('nocomma-park', 3, 'Describe a park in two sentences without using any commas.', { type: 'no_commas' }),
  I('quoted-motto', 2, 'Write a short motto and wrap your entire reply in double quotes.', { type: 'quoted' }),
];

const wordsOf = (s: string): string[] => s.split(/\s+/).map((w) => w.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '')).filter((w) => w.length > 0);

/** The first balanced {...} in the text parsed as JSON, or undefined. */
function firstJsonObject(text: string): unknown {
  const unfenced = text.replace(/```(?:json)?/g, '');
  for (let start = unfenced.indexOf('{'); start >= 0; start = unfenced.indexOf('{', start + 1)) {
    let depth = 0;
    let inStr = false;
    for (let i = start; i < unfenced.length; i++) {
      const ch = unfenced[i];
      if (inStr) {
        if (ch === '\\') i++;
        else if (ch === '"') inStr = false;
      } else if (ch === '"') inStr = true;
      else if (ch === '{') depth++;
      else if (ch === '}' && --depth === 0) {
        try {
          return JSON.parse(unfenced.slice(start, i + 1));
        } catch {
          break;
        }
      }
    }
  }
  return undefined;
}

/** Whether `reply` (already cut to the answer) meets the check; the reason when it does not. */
export function checkInstruction(check: InstructionCheck, reply: string): { ok: boolean; why?: string } {
  const r = reply.trim();
  const fail = (why: string) => ({ ok: false, why });
  if (r.length === 0) return fail('empty reply');
  const letters = r.replace(/[^\p{L}]/gu, '');
  switch (check.type) {
    case 'words_exactly': {
      const n = wordsOf(r).length;
      return n === check.n ? { ok: true } : fail(`${n} words, not ${check.n}`);
    }
    case 'max_words': {
      const n = wordsOf(r).length;
      return n <= check.n ? { ok: true } : fail(`${n} words, more than ${check.n}`);
    }
    case 'uppercase':
      return letters.length > 0 && letters === letters.toUpperCase() ? { ok: true } : fail('not all uppercase');
    case 'lowercase':
      return letters.length > 0 && letters === letters.toLowerCase() ? { ok: true } : fail('not all lowercase');
    case 'include_word':
      return wordsOf(r.toLowerCase()).includes(check.word.toLowerCase()) ? { ok: true } : fail(`no word "${check.word}"`);
    case 'exclude_word':
      return wordsOf(r.toLowerCase()).includes(check.word.toLowerCase()) ? fail(`uses "${check.word}"`) : { ok: true };
    case 'json_key': {
      const o = firstJsonObject(r);
      return o !== null && typeof o === 'object' && !Array.isArray(o) && Object.hasOwn(o, check.key) ? { ok: true } : fail(`no JSON object with key "${check.key}"`);
    }
    case 'starts_with':
      return r.startsWith(check.prefix) ? { ok: true } : fail(`does not start with "${check.prefix}"`);
    case 'ends_with': {
      const stripped = /^[\p{L}\p{N}]+$/u.test(check.suffix) ? r.replace(/[.!]+$/, '') : r;
      return stripped.endsWith(check.suffix) ? { ok: true } : fail(`does not end with "${check.suffix}"`);
    }
    case 'number_only':
      return /^-?\d+(\.\d+)?\.?$/.test(r) ? { ok: true } : fail('not just a number');
    case 'bullets': {
      const lines = r.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
      const bullets = lines.filter((l) => /^[-*•]\s+\S/.test(l)).length;
      return bullets === check.n && lines.length === check.n ? { ok: true } : fail(`${bullets} bullets in ${lines.length} lines, not ${check.n}`);
    }
    case 'no_commas':
      return /[,，]/.test(r) ? fail('has a comma') : { ok: true };
    case 'quoted':
      return /^["“][^]*["”]$/.test(r) && r.length >= 2 ? { ok: true } : fail('not wrapped in double quotes');
  }
}
