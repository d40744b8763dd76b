/**
 * Code tasks: loading them from JSONL and turning (task, completion) into the Python program the sandbox runs.
 *
 * A task file has one JSON object per line (blank lines are skipped):
 *
 *     {"id": "add-1", "prompt": "def add(a, b):\n", "tests": "assert add(1, 2) == 3\n", "entry_point": "add"}
 *
 * HumanEval's spelling loads too: `task_id` is read as `id` and `test` as `tests` when the canonical name is
 * absent (other fields, such as `canonical_solution`, are ignored). Every error names the file, the line and
 * the field, and a repeated id is refused: two tasks with one id would silently merge their samples.
 */
import { readFile } from 'node:fs/promises';
import { UserError } from '../core/errors.js';
import { parseJsonlObjects } from '../core/jsonl.js';

export interface CodeTask {
  id: string;
  /** The text the model continues: usually imports, a signature and a docstring. */
  prompt: string;
  /** Python run after the completion: top-level asserts, or HumanEval's `def check(candidate): ...`. */
  tests: string;
  /** The function under test (a Python identifier). */
  entry_point: string;
  language?: 'python' | 'javascript';
  /** The file format it was loaded from (src/eval/formats; default 'distillery', this file's format). */
  format?: TaskFormat;
  /** The reference solution as a continuation of `prompt` (for --check-canonical), when the format has one. */
  canonical?: string;
  /** The instruction sent to chat models (docs/eval-formats.md); default: built from `prompt`. */
  chatPrompt?: string;
  /** stdin/stdout tasks: each case runs the program with `input` on stdin and compares stdout to `output`. */
  cases?: { input: string; output: string }[];
  /** Code the program starts with in stdin/stdout tasks (the starter code); the completion follows it. */
  preamble?: string;
  /** Stop sequences at which a continuation is cut (MultiPL-E `stop_tokens`). */
  stop?: string[];
}

/** Task file formats (docs/eval-formats.md). */
export type TaskFormat = 'distillery' | 'humaneval' | 'humaneval-plus' | 'mbpp' | 'stdio' | 'multipl-e';

/**
 * How completions are turned into programs:
 * - `continuation`: a base model continued the prompt; the program is prompt + completion (+ tests).
 * - `chat`: a chat model answered in prose with a code block; the code is taken out with `extractCode` and
 *   placed after the prompt (see `buildChatProgram`).
 */
export type CompletionFormat = 'continuation' | 'chat';

const PY_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Parses task JSONL text; `source` names it in errors (a file path, or e.g. "demo suite"). */
export function parseTasks(text: string, source: string): CodeTask[] {
  const tasks: CodeTask[] = [];
  const firstLine = new Map<string, number>();
  for (const { rec, line: lineNo, where } of parseJsonlObjects(text, source)) {
    const field = (name: string, alias?: string): string => {
      const key = name in rec || alias === undefined || !(alias in rec) ? name : alias;
      const v = rec[key];
      if (v === undefined) {
        throw new UserError(`${where}: missing field "${name}"`, alias ? `("${alias}" is accepted too)` : undefined);
      }
      if (typeof v !== 'string') throw new UserError(`${where}: field "${key}" must be a string, got ${describe(v)}`);
      return v;
    };
    const id = field('id', 'task_id');
    if (id.trim() === '') throw new UserError(`${where}: field "id" is empty`);
    const prompt = field('prompt');
    const tests = field('tests', 'test');
    if (tests.trim() === '') {
      throw new UserError(`${where}: field "tests" is empty`, 'a task without tests would pass every completion');
    }
    const entry_point = field('entry_point');
    if (!PY_IDENTIFIER.test(entry_point)) {
      throw new UserError(`${where}: field "entry_point" must be a Python identifier, got ${JSON.stringify(entry_point)}`);
    }
    const task: CodeTask = { id, prompt, tests, entry_point };
    if (rec.language !== undefined) {
      if (rec.language !== 'python') {
        throw new UserError(`${where}: field "language" must be "python", got ${describe(rec.language)}`, 'only Python tasks run in the sandbox');
      }
      task.language = 'python';
    }
    const seen = firstLine.get(id);
    if (seen !== undefined) throw new UserError(`${where}: duplicate id ${JSON.stringify(id)} (first on line ${seen})`);
    firstLine.set(id, lineNo);
    tasks.push(task);
  }
  return tasks;
}

/** Reads and validates a task JSONL file. */
export async function loadTasks(file: string): Promise<CodeTask[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read task file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const tasks = parseTasks(text, file);
  if (tasks.length === 0) throw new UserError(`${file}: no tasks (the file is empty)`);
  return tasks;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'number' || typeof v === 'boolean' ? `${typeof v} ${String(v)}` : typeof v;
}

/**
 * The program for a base-model completion: `prompt + completion + "\n\n" + tests`.
 *
 * The completion is appended to the prompt because that is what a base model produced: it continued the
 * prompt text (typically writing a function body under the signature and docstring the prompt ends with), so
 * the completion alone is not a program — only prompt + completion is. This is HumanEval's convention.
 *
 * HumanEval-style tests define `def check(candidate): ...` without calling it; when the tests define a
 * top-level `check` function, `check(<entry_point>)` is appended so the asserts actually run (otherwise every
 * completion would pass). Tests written as top-level asserts are left as they are.
 */
export function buildProgram(task: CodeTask, completion: string): string {
  return task.prompt + completion + '\n\n' + task.tests + checkCall(task);
}

/**
 * The program for a chat-style answer: `prompt + "\n" + extractCode(answer) + "\n\n" + tests`.
 *
 * The answer usually repeats the whole function, so it is placed after the prompt on a fresh line rather than
 * glued to it: the prompt keeps supplying its imports and helpers, its own copy of the function (a signature
 * and docstring, which is a valid body on its own) is simply redefined by the answer's. This needs the prompt
 * to be syntactically complete on its own, as HumanEval-style prompts ending in a docstring are.
 */
export function buildChatProgram(task: CodeTask, answer: string): string {
  return task.prompt + '\n' + extractCode(answer) + '\n\n' + task.tests + checkCall(task);
}

/** Builds the program for a completion in the given format. */
export function programFor(task: CodeTask, completion: string, format: CompletionFormat = 'continuation'): string {
  return format === 'chat' ? buildChatProgram(task, completion) : buildProgram(task, completion);
}

function checkCall(task: CodeTask): string {
  return /^def check\s*\(/m.test(task.tests) ? `\n\ncheck(${task.entry_point})\n` : '';
}

const LANGUAGE_TAGS: Record<'python' | 'javascript', string[]> = {
  python: ['python', 'py', 'python3', 'py3'],
  javascript: ['javascript', 'js', 'node', 'nodejs', 'jsx', 'mjs', 'cjs'],
};

/** Where code starts in an answer without fences: a line that opens a definition, an import or a statement. */
const CODE_START: Record<'python' | 'javascript', RegExp> = {
  python: /^(?:def |async def |class |import |from \S+ import |@\w|[A-Za-z_][\w.]*\s*=[^=]|if __name__|for |while |print\()/,
  javascript: /^(?:function[\s*]|async function|const |let |var |class |module\.exports|exports\.|'use strict'|"use strict"|import |require\()/,
};

/**
 * A line of prose before bare code: no code punctuation (`=`, brackets, `#`, `;`), starting at column 0 with a
 * word, and either ending in `.`, `:` or `!` or at least four words long ("Here is the solution:").
 */
const PROSE = /^(?=[A-Za-z])[^=()[\]{}#;]*$/;
const proseLike = (l: string): boolean => PROSE.test(l) && (/[.:!]\s*$/.test(l) || l.trim().split(/\s+/).length >= 4);

/**
 * The code in a chat-style answer:
 * 1. the body of the last fenced block tagged with the language (```python / ```py / ```python3 for Python,
 *    ```javascript / ```js / ```node … for JavaScript); else the last untagged ``` block; a fence tagged with
 *    another language is ignored. An unclosed final fence (a truncated answer) counts as a block running to the
 *    end of the text.
 * 2. With no usable fence, bare code: when the text starts with prose and a later line starts code (a `def`,
 *    `import`, `class`… at column 0), the prose before it is dropped; otherwise the raw text is returned — which
 *    also keeps a function body (indented lines) that continues the prompt as it is.
 */
export function extractCode(text: string, language: 'python' | 'javascript' = 'python'): string {
  const fence = /^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n([\s\S]*?)(?:^[ \t]*```[ \t]*$|(?![\s\S]))/gm;
  let lastTagged: string | undefined;
  let lastPlain: string | undefined;
  for (let m = fence.exec(text); m !== null; m = fence.exec(text)) {
    const lang = m[1]!.toLowerCase();
    const body = m[2]!.replace(/\n$/, '');
    if (LANGUAGE_TAGS[language].includes(lang)) lastTagged = body;
    else if (lang === '') lastPlain = body;
  }
  const fenced = lastTagged ?? lastPlain;
  if (fenced !== undefined) return fenced;
  const lines = text.split('\n');
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0 || !proseLike(lines[first]!) || CODE_START[language].test(lines[first]!)) return text;
  const start = lines.findIndex((l) => CODE_START[language].test(l));
  return start > 0 ? lines.slice(start).join('\n') : text;
}
