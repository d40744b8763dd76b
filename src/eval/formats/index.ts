/**
 * Standard task formats (docs/eval-formats.md): loading HumanEval, HumanEval+, MBPP, stdin/stdout contest
 * problems and MultiPL-E JavaScript files the user has, building the prompt per model type, and turning
 * (task, completion) into what the sandbox runs (`checksFor`). Nothing is downloaded.
 */
import { readFile } from 'node:fs/promises';
import { UserError } from '../../core/errors.js';
import { parseJsonlObjects, type JsonlRecord } from '../../core/jsonl.js';
import type { Program } from '../sandbox.js';
import { buildChatProgram, buildProgram, extractCode, parseTasks, type CodeTask, type CompletionFormat, type TaskFormat } from '../tasks.js';

export const TASK_FORMATS: readonly TaskFormat[] = ['distillery', 'humaneval', 'humaneval-plus', 'mbpp', 'stdio', 'multipl-e'];

/** One sandbox run of a completion; the completion passes when every check passes. */
export interface Check {
  program: Program;
  /** stdin/stdout tasks: what stdout must match (stdoutMatches). */
  expectedStdout?: string;
  /** Which test case this is, for reports ("case 3 of 10"). */
  label?: string;
}

/**
 * The format of a task file, from the fields of its first record:
 * `question_content`, `public_test_cases` or `test_cases` → stdio; `stop_tokens` with `tests` → multipl-e;
 * `text` with `test_list` → mbpp; `base_input` or `plus_input` → humaneval-plus; `task_id` with `test` and
 * `canonical_solution` → humaneval; anything else → distillery.
 */
export function detectFormat(rec: Record<string, unknown>): TaskFormat {
  if ('question_content' in rec || 'public_test_cases' in rec || 'test_cases' in rec) return 'stdio';
  if ('stop_tokens' in rec && 'tests' in rec) return 'multipl-e';
  if ('text' in rec && 'test_list' in rec) return 'mbpp';
  if ('base_input' in rec || 'plus_input' in rec) return 'humaneval-plus';
  if ('task_id' in rec && 'test' in rec && 'canonical_solution' in rec) return 'humaneval';
  return 'distillery';
}

/** Parses a task file's text in the given format (or the one detected from its first record). */
export function parseTaskFile(text: string, source: string, format?: TaskFormat): { format: TaskFormat; tasks: CodeTask[] } {
  if (format !== undefined && !TASK_FORMATS.includes(format)) {
    throw new UserError(`unknown task format ${JSON.stringify(format)}`, `one of: ${TASK_FORMATS.join(', ')}`);
  }
  const records = parseJsonlObjects(text, source);
  const fmt = format ?? (records.length > 0 ? detectFormat(records[0]!.rec) : 'distillery');
  let tasks: CodeTask[];
  switch (fmt) {
    case 'distillery':
      tasks = parseTasks(text, source).map((t) => ({ ...t, format: 'distillery' as const }));
      break;
    case 'humaneval':
    case 'humaneval-plus':
      tasks = records.map((r) => parseHumanEval(r, fmt));
      break;
    case 'mbpp':
      tasks = records.map(parseMbpp);
      break;
    case 'stdio':
      tasks = records.map(parseStdio);
      break;
    case 'multipl-e':
      tasks = records.map(parseMultiplE);
      break;
  }
  const first = new Map<string, string>();
  tasks.forEach((t, i) => {
    const where = records[i]?.where ?? source;
    const seen = first.get(t.id);
    if (seen !== undefined) throw new UserError(`${where}: duplicate id ${JSON.stringify(t.id)} (first at ${seen})`);
    first.set(t.id, where);
  });
  return { format: fmt, tasks };
}

/** Reads a task file in any supported format (`format` forces one; default: detected from the first record). */
export async function loadTaskFile(file: string, format?: TaskFormat): Promise<{ format: TaskFormat; tasks: CodeTask[] }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read task file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const r = parseTaskFile(text, file, format);
  if (r.tasks.length === 0) throw new UserError(`${file}: no tasks (the file is empty)`);
  return r;
}

// ---------------------------------------------------------------------------------------------- field access

function str(r: JsonlRecord, names: string[], opts: { optional?: boolean; nonEmpty?: boolean } = {}): string | undefined {
  const key = names.find((n) => n in r.rec && r.rec[n] !== null);
  if (key === undefined) {
    if (opts.optional) return undefined;
    throw new UserError(`${r.where}: missing field "${names[0]}"`, names.length > 1 ? `(${names.slice(1).map((n) => `"${n}"`).join(', ')} accepted too)` : undefined);
  }
  const v = r.rec[key];
  if (typeof v === 'number' && key.endsWith('id')) return String(v);
  if (typeof v !== 'string') throw new UserError(`${r.where}: field "${key}" must be a string, got ${Array.isArray(v) ? 'an array' : typeof v}`);
  if (opts.nonEmpty && v.trim() === '') throw new UserError(`${r.where}: field "${key}" is empty`);
  return v;
}

function strList(r: JsonlRecord, name: string, opts: { optional?: boolean } = {}): string[] {
  const v = r.rec[name];
  if (v === undefined || v === null) {
    if (opts.optional) return [];
    throw new UserError(`${r.where}: missing field "${name}"`);
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new UserError(`${r.where}: field "${name}" must be an array of strings`);
  return v as string[];
}

const PY_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

function identifier(r: JsonlRecord, name: string, v: string): string {
  if (!PY_IDENTIFIER.test(v)) throw new UserError(`${r.where}: field "${name}" must be an identifier, got ${JSON.stringify(v)}`);
  return v;
}

/** A Python string literal holding `s` (a JSON string literal is one). */
function pyStr(s: string): string {
  return JSON.stringify(s);
}

// ------------------------------------------------------------------------------------------------ HumanEval(+)

function parseHumanEval(r: JsonlRecord, fmt: 'humaneval' | 'humaneval-plus'): CodeTask {
  const id = str(r, ['task_id', 'id'], { nonEmpty: true })!;
  const prompt = str(r, ['prompt'])!;
  const entry = identifier(r, 'entry_point', str(r, ['entry_point'])!);
  const canonical = str(r, ['canonical_solution'], { optional: true });
  let tests = str(r, ['test', 'tests'], { optional: fmt === 'humaneval-plus' }) ?? '';
  if (fmt === 'humaneval-plus') {
    if (canonical === undefined) throw new UserError(`${r.where}: missing field "canonical_solution"`, 'HumanEval+ computes the expected outputs by running the reference solution');
    const inputs: unknown[] = [];
    for (const name of ['base_input', 'plus_input']) {
      const v = r.rec[name];
      if (v === undefined || v === null) continue;
      if (!Array.isArray(v) || v.some((a) => !Array.isArray(a))) throw new UserError(`${r.where}: field "${name}" must be an array of argument lists`);
      inputs.push(...v);
    }
    if (inputs.length === 0) throw new UserError(`${r.where}: no test inputs ("base_input" and "plus_input" are both empty)`);
    const atol = r.rec.atol ?? 0;
    if (typeof atol !== 'number' || !(atol >= 0)) throw new UserError(`${r.where}: field "atol" must be a number ≥ 0`);
    tests = (tests.trim() ? tests + '\n\n' : '') + plusDriver(prompt + canonical, entry, inputs, atol);
  } else if (tests.trim() === '') {
    throw new UserError(`${r.where}: field "test" is empty`, 'a task without tests would pass every completion');
  }
  return { id, prompt, tests, entry_point: entry, format: fmt, ...(canonical !== undefined ? { canonical } : {}), chatPrompt: pythonFunctionChat(prompt) };
}

/**
 * HumanEval+'s differential test, as EvalPlus does it: the reference (prompt + canonical_solution) runs on each
 * input (a deep copy) to give the expected output, the candidate on another copy; outputs must be equal, except
 * that a float or a list of floats is compared with |out − exp| ≤ atol + 1e-7·|exp| (atol 0 means 1e-6).
 */
function plusDriver(reference: string, entry: string, inputs: unknown[], atol: number): string {
  return `
def __distillery_plus_check(candidate):
    import copy, json, math
    ref_globals = {'__name__': '__distillery_reference__'}
    exec(compile(${pyStr(reference)}, '<reference solution>', 'exec'), ref_globals)
    reference = ref_globals[${pyStr(entry)}]
    inputs = json.loads(${pyStr(JSON.stringify(inputs))})
    atol = ${atol} or 1e-6

    def is_floats(x):
        if isinstance(x, float):
            return True
        if isinstance(x, (list, tuple)) and x:
            return all(isinstance(i, float) for i in x)
        return False

    def close(a, b):
        return isinstance(a, (int, float)) and not isinstance(a, bool) and abs(a - b) <= atol + 1e-7 * abs(b)

    for n, args in enumerate(inputs):
        expected = reference(*copy.deepcopy(args))
        out = candidate(*copy.deepcopy(args))
        if out == expected:
            continue
        if is_floats(expected):
            if isinstance(expected, float) and close(out, expected):
                continue
            if isinstance(expected, (list, tuple)) and isinstance(out, (list, tuple)) and len(out) == len(expected) and all(close(o, e) for o, e in zip(out, expected)):
                continue
        raise AssertionError('input %d %r: expected %r, got %r' % (n, args, expected, out))

__distillery_plus_check(${entry})
`;
}

function pythonFunctionChat(prompt: string): string {
  return `Complete the following Python function. Answer with the complete function (its signature included, with any imports it needs) in a single \`\`\`python code block.\n\n\`\`\`python\n${prompt.replace(/\n*$/, '\n')}\`\`\`\n`;
}

// -------------------------------------------------------------------------------------------------------- MBPP

/**
 * MBPP: the base prompt is the usual zero-shot variant (as in bigcode-evaluation-harness): a docstring holding
 * the description and the first test, `"""\n{text}\n{test_list[0]}\n"""\n`; the model writes the whole
 * solution after it. Tests: `test_setup_code`, then every assert of `test_list` (not `challenge_test_list`,
 * which the original evaluation keeps apart).
 */
function parseMbpp(r: JsonlRecord): CodeTask {
  const idv = r.rec.task_id ?? r.rec.id;
  if (idv === undefined || (typeof idv !== 'string' && typeof idv !== 'number')) throw new UserError(`${r.where}: missing field "task_id"`);
  const id = String(idv);
  const text = str(r, ['text', 'prompt'], { nonEmpty: true })!;
  const code = str(r, ['code'], { optional: true });
  const testList = strList(r, 'test_list');
  if (testList.length === 0) throw new UserError(`${r.where}: field "test_list" is empty`, 'a task without tests would pass every completion');
  const setup = str(r, ['test_setup_code'], { optional: true }) ?? '';
  const entry = /assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(/.exec(testList[0]!)?.[1] ?? '';
  const prompt = `"""\n${text.trim()}\n${testList[0]!.trim()}\n"""\n`;
  const tests = (setup.trim() ? setup.replace(/\n*$/, '\n') : '') + testList.join('\n') + '\n';
  const chatPrompt = `You are an expert Python programmer, and here is your task: ${text.trim()} Your code should pass this test:\n\n${testList[0]!.trim()}\n\nAnswer with the complete code in a single \`\`\`python code block.\n`;
  return { id, prompt, tests, entry_point: entry, format: 'mbpp', ...(code !== undefined ? { canonical: code } : {}), chatPrompt };
}

// ------------------------------------------------------------------------------------------------ stdin/stdout

interface Case {
  input: string;
  output: string;
}

function parseCases(r: JsonlRecord, name: string): Case[] {
  let v = r.rec[name];
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      throw new UserError(`${r.where}: field "${name}" is a string that is not JSON`, 'LiveCodeBench ships private cases compressed (base64 + zlib + pickle): decompress them to a JSON array of {"input", "output"} first');
    }
  }
  if (!Array.isArray(v)) throw new UserError(`${r.where}: field "${name}" must be an array of {"input", "output"}`);
  return v.map((c, i) => {
    const o = c as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.input !== 'string' || typeof o.output !== 'string') {
      throw new UserError(`${r.where}: ${name}[${i}] must be {"input": string, "output": string}`);
    }
    return { input: o.input, output: o.output };
  });
}

/**
 * stdin/stdout problems (LiveCodeBench layout, also accepted with simpler names): id `question_id`|`task_id`|`id`,
 * statement `question_content`|`question`|`prompt`, cases `public_test_cases` + `private_test_cases` (arrays, or
 * JSON strings of arrays) or `test_cases`, `starter_code`, and `fn_name` (or `metadata.func_name`) for the
 * function form. Reference: `canonical_solution`|`solution` (optional).
 *
 * Stdin form: each case runs the program with `input` on stdin and its stdout must match `output`
 * (stdoutMatches). Function form: one program calls `fn_name` (a method of `Solution` when the code defines
 * that class, else a top-level function) with the JSON values on the input's lines as arguments and compares
 * the result with the JSON `output` by ==.
 */
function parseStdio(r: JsonlRecord): CodeTask {
  const id = str(r, ['question_id', 'task_id', 'id'], { nonEmpty: true })!;
  const question = str(r, ['question_content', 'question', 'prompt'], { nonEmpty: true })!;
  const starter = str(r, ['starter_code'], { optional: true }) ?? '';
  let fn = str(r, ['fn_name'], { optional: true });
  const meta = r.rec.metadata;
  if (fn === undefined && meta !== undefined) {
    let m: unknown = meta;
    if (typeof m === 'string') {
      try {
        m = JSON.parse(m);
      } catch {
        m = {};
      }
    }
    const f = (m as Record<string, unknown> | null)?.func_name;
    if (typeof f === 'string') fn = f;
  }
  if (fn !== undefined) identifier(r, 'fn_name', fn);
  const cases = [...parseCases(r, 'public_test_cases'), ...parseCases(r, 'private_test_cases'), ...parseCases(r, 'test_cases')];
  if (cases.length === 0) throw new UserError(`${r.where}: no test cases`, 'give "public_test_cases"/"private_test_cases" (or "test_cases") as arrays of {"input", "output"}');
  const canonical = str(r, ['canonical_solution', 'solution'], { optional: true });
  const how = fn !== undefined
    ? `Complete the function ${fn} in the starter code below; it is called with the test arguments and its return value is checked.`
    : 'Read the input from standard input and write the answer to standard output.';
  const prompt = `"""\n${question.trim()}\n\n${how}\n"""\n${starter}`;
  const chatPrompt = `${question.trim()}\n\n${how}${starter.trim() ? `\n\n\`\`\`python\n${starter.replace(/\n*$/, '\n')}\`\`\`` : ''}\n\nAnswer with the complete Python 3 program in a single \`\`\`python code block.\n`;
  return {
    id,
    prompt,
    tests: JSON.stringify(cases),
    entry_point: fn ?? '',
    format: 'stdio',
    cases,
    ...(starter ? { preamble: starter } : {}),
    ...(canonical !== undefined ? { canonical } : {}),
    chatPrompt,
  };
}

function functionDriver(fn: string, cases: Case[]): string {
  return `

def __distillery_call_check():
    import json
    cases = json.loads(${pyStr(JSON.stringify(cases))})
    g = globals()
    target = getattr(g['Solution'](), ${pyStr(fn)}) if 'Solution' in g else g[${pyStr(fn)}]
    for n, case in enumerate(cases):
        args = [json.loads(line) for line in case['input'].split('\\n') if line.strip()]
        expected = json.loads(case['output'])
        out = target(*args)
        if isinstance(out, tuple):
            out = list(out)
        if out != expected:
            raise AssertionError('case %d %r: expected %r, got %r' % (n, args, expected, out))

__distillery_call_check()
`;
}

// ------------------------------------------------------------------------------------------------- MultiPL-E

/**
 * MultiPL-E / mxeval JavaScript: `name`|`task_id`, `language` (js/javascript; ts is refused: Node 20 cannot run
 * TypeScript without a compiler), `prompt` (ends inside the function), `tests` (JS that throws or uses
 * node:assert on failure), `stop_tokens`. Reference: `canonical_solution` (optional, a continuation of the prompt).
 */
function parseMultiplE(r: JsonlRecord): CodeTask {
  const id = str(r, ['name', 'task_id', 'id'], { nonEmpty: true })!;
  const lang = (str(r, ['language'], { optional: true }) ?? 'js').toLowerCase();
  if (lang === 'ts' || lang === 'typescript') {
    throw new UserError(`${r.where}: TypeScript tasks are not supported`, 'Node 20 cannot strip types, and no TypeScript compiler is run in the sandbox; use the JavaScript (js) version of the tasks');
  }
  if (lang !== 'js' && lang !== 'javascript') throw new UserError(`${r.where}: language ${JSON.stringify(lang)} is not supported`, 'only js/javascript (and Python in the other formats) run in the sandbox');
  const prompt = str(r, ['prompt'])!;
  const tests = str(r, ['tests', 'test'], { nonEmpty: true })!;
  const stop = strList(r, 'stop_tokens', { optional: true });
  const canonical = str(r, ['canonical_solution'], { optional: true });
  const chatPrompt = `Complete the following JavaScript function. Answer with the complete function (its signature included) in a single \`\`\`javascript code block.\n\n\`\`\`javascript\n${prompt.replace(/\n*$/, '\n')}\`\`\`\n`;
  return { id, prompt, tests, entry_point: '', language: 'javascript', format: 'multipl-e', stop, ...(canonical !== undefined ? { canonical } : {}), chatPrompt };
}

/** A continuation cut at the first stop sequence (MultiPL-E's `stop_tokens`). */
export function cutAtStop(completion: string, stop: readonly string[] | undefined): string {
  let end = completion.length;
  for (const s of stop ?? []) {
    if (!s) continue;
    const i = completion.indexOf(s);
    if (i >= 0 && i < end) end = i;
  }
  return completion.slice(0, end);
}

// --------------------------------------------------------------------------------------------------- programs

/** The text sent to the model: the raw prompt for a base model, the instruction for a chat model. */
export function promptFor(task: CodeTask, mode: CompletionFormat): string {
  if (mode === 'continuation') return task.prompt;
  return task.chatPrompt ?? pythonFunctionChat(task.prompt);
}

/**
 * What runs for one completion. `continuation`: the completion continues the base prompt; `chat`: the code is
 * taken out of the answer (extractCode). Per format:
 * - distillery, humaneval, humaneval-plus: prompt + completion + tests (+ `check(entry_point)`), or for chat
 *   prompt + "\n" + code + tests (buildProgram / buildChatProgram);
 * - mbpp: prompt + completion + tests; chat: code + tests;
 * - stdio: prompt (statement docstring + starter code) + completion, or the answer's code; one run per case
 *   with its input on stdin (stdin form), or one run of the function driver (function form);
 * - multipl-e: prompt + completion cut at the stop tokens + tests; chat: code + tests. Run with node.
 */
export function checksFor(task: CodeTask, completion: string, mode: CompletionFormat = 'continuation'): Check[] {
  const chat = mode === 'chat';
  switch (task.format ?? 'distillery') {
    case 'distillery':
    case 'humaneval':
    case 'humaneval-plus':
      return [{ program: chat ? buildChatProgram(task, completion) : buildProgram(task, completion) }];
    case 'mbpp':
      return [{ program: (chat ? extractCode(completion) : task.prompt + completion) + '\n\n' + task.tests }];
    case 'multipl-e': {
      const code = chat ? extractCode(completion, 'javascript') : task.prompt + cutAtStop(completion, task.stop);
      return [{ program: { code: code + '\n\n' + task.tests + '\n', language: 'javascript' } }];
    }
    case 'stdio': {
      const code = chat ? extractCode(completion) : task.prompt + cutFence(completion);
      const cases = task.cases ?? [];
      if (task.entry_point) return [{ program: code + functionDriver(task.entry_point, cases) }];
      return cases.map((c, i) => ({ program: { code, stdin: c.input }, expectedStdout: c.output, label: `case ${i + 1} of ${cases.length}` }));
    }
  }
}

/** A base model that opened a code fence itself may close it: the code ends at a line starting with ```. */
function cutFence(completion: string): string {
  const m = /^```/m.exec(completion);
  return m ? completion.slice(0, m.index) : completion;
}

/**
 * The runs of a task's reference solution (for --check-canonical), or undefined when the task has none. The
 * reference is a continuation of the prompt (HumanEval, HumanEval+, MBPP after its docstring prompt, MultiPL-E),
 * except for stdin/stdout problems, whose reference is a whole program and runs as it is.
 */
export function canonicalChecks(task: CodeTask): Check[] | undefined {
  if (task.canonical === undefined) return undefined;
  if (task.format === 'stdio') return checksFor({ ...task, prompt: '' }, task.canonical, 'continuation');
  return checksFor(task, task.canonical, 'continuation');
}
