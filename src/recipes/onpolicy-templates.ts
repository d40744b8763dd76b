import { UserError } from '../core/errors.js';

/**
 * Prompt templates of the on-policy recipes, as versioned constants copied verbatim from the reference code
 * and papers (docs/recipes/sdft.md, opsd.md; sources in ../shared/research/self-distillation.md §2.2, §3.2).
 * A run records the id and the exact strings it used (templates.json in the run folder), because the wording
 * changed between versions of the reference code.
 *
 * Two placeholder syntaxes:
 * - `dollar`: Python string.Template, as the SDFT code uses it: `$name` or `${name}`, `$$` for a literal `$`.
 * - `brace`: `{name}` where name is an identifier, `{{` / `}}` for literal braces; anything else in braces
 *   (such as `\boxed{}`) is literal text. OPSD's templates and custom templates use this one.
 * Substitution is a single pass: a record's text that happens to contain a placeholder is not expanded again.
 */
export type TemplateSyntax = 'dollar' | 'brace';

export interface PromptTemplate {
  /** Versioned id, recorded with every run. */
  id: string;
  syntax: TemplateSyntax;
  text: string;
  /** Where the text comes from. */
  source: string;
}

export interface TemplatePair {
  /** Id of the pair: a built-in id, or `custom` / `<built-in>+custom-student` / `<built-in>+custom-teacher`. */
  id: string;
  student: PromptTemplate;
  teacher: PromptTemplate;
}

export type OnPolicyRecipe = 'sdft' | 'opsd' | 'distill';

/** The record fields each recipe's templates may name (custom templates use these names). */
export const TEMPLATE_FIELDS: Record<OnPolicyRecipe, readonly string[]> = {
  sdft: ['prompt', 'demonstration'],
  opsd: ['problem', 'solution'],
  distill: ['prompt'],
};

// ---------------------------------------------------------------------------------------------------------
// SDFT (Shenfeld et al., 2601.19897). The student sees the original prompt; the teacher sees the prompt with
// the demonstration. Placeholders as in the official code: $orig_content = the question, $output_text = the
// demonstration. Starts with a newline, no trailing newline.

const SDFT_STUDENT: PromptTemplate = {
  id: 'sdft-student',
  syntax: 'brace',
  text: '{prompt}',
  source: 'SDFT: the student prompt is the original user message',
};

export const SDFT_TEACHER_CODE: PromptTemplate = {
  id: 'sdft-paper-code',
  syntax: 'dollar',
  text:
    '\n$orig_content\n\nThis is an example for a response to the question:\n$output_text\n\n' +
    'Now answer with a response of your own, including the thinking process.',
  source: 'official SDFT code (idanshen/Self-Distillation main.py, read via RohanAwhad/idan-Self-Distillation)',
};

/** The paper's wording, which ends in a colon instead of a full stop [paper*]. */
export const SDFT_TEACHER_PAPER: PromptTemplate = {
  id: 'sdft-paper-text',
  syntax: 'dollar',
  text:
    '\n$orig_content\n\nThis is an example for a response to the question:\n$output_text\n\n' +
    'Now answer with a response of your own, including the thinking process:',
  source: 'SDFT paper text (2601.19897), as transcribed: trailing colon',
};

// ---------------------------------------------------------------------------------------------------------
// OPSD (Zhao et al., 2601.18734). Both sides are user messages; the teacher's includes the reference solution.

const OPSD_STUDENT_CODE: PromptTemplate = {
  id: 'opsd-student',
  syntax: 'brace',
  text: 'Problem: {problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}.',
  source: 'siyan-zhao/OPSD data_collator.py (student user message)',
};

export const OPSD_TEACHER_C181E5B: PromptTemplate = {
  id: 'opsd-c181e5b',
  syntax: 'brace',
  text:
    'Problem: {problem}\n\nHere is a reference solution to this problem:\n=== Reference Solution Begin ===\n{solution}\n' +
    '=== Reference Solution End ===\n\n\n' +
    'After reading the reference solution above, make sure you truly understand the reasoning behind each step ' +
    '\u2014 do not copy or paraphrase it. Now, using your own words and independent reasoning, derive the same ' +
    "final answer to the problem above. Think step by step, explore different approaches, and don't be afraid to " +
    "backtrack or reconsider if something doesn't work out:\n\n" +
    'Please reason step by step, and put your final answer within \\boxed{}.',
  source: 'siyan-zhao/OPSD @c181e5b data_collator.py (current code)',
};

export const OPSD_TEACHER_20260310: PromptTemplate = {
  id: 'opsd-2026-03-10',
  syntax: 'brace',
  text:
    '{problem}\n\nHere is a reference solution to this problem:\n{solution}\n' +
    '\n\nAfter understanding the reference solution and the rationale behind each step, now articulate your own ' +
    'step-by-step reasoning that derives the same final answer to the problem below:\n' +
    '\nPlease reason step by step, and put your final answer within \\boxed{}.',
  source: 'siyan-zhao/OPSD @590ec26 (2026-03-10) data_collator.py',
};

const OPSD_STUDENT_PAPER: PromptTemplate = {
  id: 'opsd-paper-v1-student',
  syntax: 'brace',
  text: 'Problem: {problem}\nAnswer:',
  source: 'OPSD paper v1, Fig. 2 (student)',
};

export const OPSD_TEACHER_PAPER: PromptTemplate = {
  id: 'opsd-paper-v1',
  syntax: 'brace',
  text:
    'Problem: {problem}\nHere is a reference solution:\n{solution}\n' +
    'After understanding the reference solution, please try to solve this problem using your own approach below:\nAnswer:',
  source: 'OPSD paper v1, Fig. 2 (teacher)',
};

// ---------------------------------------------------------------------------------------------------------
// On-policy distillation from another model (GKD): both sides see the record's prompt unchanged.

const DISTILL_SAME: PromptTemplate = {
  id: 'distill-prompt',
  syntax: 'brace',
  text: '{prompt}',
  source: 'GKD: teacher and student see the same prompt',
};

/** Built-in template pairs by recipe; the first is the default. */
export const BUILTIN_TEMPLATES: Record<OnPolicyRecipe, TemplatePair[]> = {
  sdft: [
    { id: 'sdft-paper-code', student: SDFT_STUDENT, teacher: SDFT_TEACHER_CODE },
    { id: 'sdft-paper-text', student: SDFT_STUDENT, teacher: SDFT_TEACHER_PAPER },
  ],
  opsd: [
    { id: 'opsd-c181e5b', student: OPSD_STUDENT_CODE, teacher: OPSD_TEACHER_C181E5B },
    { id: 'opsd-2026-03-10', student: OPSD_STUDENT_CODE, teacher: OPSD_TEACHER_20260310 },
    { id: 'opsd-paper-v1', student: OPSD_STUDENT_PAPER, teacher: OPSD_TEACHER_PAPER },
  ],
  distill: [{ id: 'distill-prompt', student: DISTILL_SAME, teacher: DISTILL_SAME }],
};

/** The placeholder names a built-in dollar template uses, mapped to record fields. */
const DOLLAR_FIELDS: Record<string, string> = { orig_content: 'prompt', output_text: 'demonstration' };

const BRACE = /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const DOLLAR = /\$(?:(\$)|([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})/g;

/** Placeholder names a template uses, in order of first use. */
export function placeholders(t: Pick<PromptTemplate, 'syntax' | 'text'>): string[] {
  const names = new Set<string>();
  if (t.syntax === 'brace') {
    for (const m of t.text.matchAll(BRACE)) if (m[1]) names.add(m[1]);
  } else {
    for (const m of t.text.matchAll(DOLLAR)) if (m[2] ?? m[3]) names.add((m[2] ?? m[3])!);
  }
  return [...names];
}

function fieldOf(t: PromptTemplate, name: string): string {
  return t.syntax === 'dollar' ? (DOLLAR_FIELDS[name] ?? name) : name;
}

/** Checks that a template names only fields the recipe's records have. */
export function checkTemplate(t: PromptTemplate, recipe: OnPolicyRecipe, what: string): void {
  const allowed = TEMPLATE_FIELDS[recipe];
  const unknown = placeholders(t).filter((p) => !allowed.includes(fieldOf(t, p)));
  if (unknown.length > 0) {
    const shown = unknown.map((p) => (t.syntax === 'brace' ? `{${p}}` : `$${p}`)).join(', ');
    throw new UserError(
      `${what}: unknown placeholder${unknown.length > 1 ? 's' : ''} ${shown}`,
      `${recipe} templates may use ${allowed.map((f) => `{${f}}`).join(', ')} (write {{ and }} for literal braces)`,
    );
  }
}

/** Renders a template for one record (single pass; missing fields are an error). */
export function renderTemplate(t: PromptTemplate, fields: Record<string, string>): string {
  const value = (name: string): string => {
    const v = fields[fieldOf(t, name)];
    if (v === undefined) throw new UserError(`template ${t.id}: no value for placeholder "${name}"`);
    return v;
  };
  if (t.syntax === 'brace') {
    return t.text.replace(BRACE, (m: string, name: string | undefined) => (m === '{{' ? '{' : m === '}}' ? '}' : value(name!)));
  }
  return t.text.replace(DOLLAR, (_m: string, dollar: string | undefined, a: string | undefined, b: string | undefined) =>
    dollar ? '$' : value((a ?? b)!),
  );
}

/** Built-in pair by id, or an error listing the ids this recipe has. */
export function builtinTemplates(recipe: OnPolicyRecipe, id: string): TemplatePair {
  const pair = BUILTIN_TEMPLATES[recipe].find((p) => p.id === id);
  if (!pair) {
    throw new UserError(
      `unknown ${recipe} template "${id}"`,
      `built-in templates: ${BUILTIN_TEMPLATES[recipe].map((p) => p.id).join(', ')}; or give templates.student / templates.teacher`,
    );
  }
  return pair;
}

/**
 * The pair a run uses: the built-in `id`, with either side replaced by a custom text (brace syntax, record
 * field names as placeholders). Checked here, so a bad template fails before any work starts.
 */
export function selectTemplates(
  recipe: OnPolicyRecipe,
  choice: { id: string; student: string | null; teacher: string | null },
): TemplatePair {
  const base = builtinTemplates(recipe, choice.id);
  const custom = (text: string, side: string): PromptTemplate => ({ id: `custom-${side}`, syntax: 'brace', text, source: 'recipe file' });
  const student = choice.student !== null ? custom(choice.student, 'student') : base.student;
  const teacher = choice.teacher !== null ? custom(choice.teacher, 'teacher') : base.teacher;
  const id =
    choice.student !== null && choice.teacher !== null
      ? 'custom'
      : choice.student !== null
        ? `${base.id}+custom-student`
        : choice.teacher !== null
          ? `${base.id}+custom-teacher`
          : base.id;
  checkTemplate(student, recipe, 'templates.student');
  checkTemplate(teacher, recipe, 'templates.teacher');
  return { id, student, teacher };
}

/** The student's and the teacher's prompt text for one record. */
export function renderPair(pair: TemplatePair, fields: Record<string, string>): { student: string; teacher: string } {
  return { student: renderTemplate(pair.student, fields), teacher: renderTemplate(pair.teacher, fields) };
}
