/**
 * Arithmetic word problems with checkable whole-number answers, generated deterministically from a seed: the
 * same seed gives the same problems on every platform (mulberry32). Seven templates of one to three steps,
 * taken in turn; difficulty = the number of operations.
 *
 * Licence: the templates are written for Distillery by its authors (MIT, like the project).
 */
import { mulberry32 } from '../../core/rng.js';

export interface ArithmeticProblem {
  id: string;
  question: string;
  answer: number;
  difficulty: 1 | 2 | 3;
}

const NAMES = ['Ana', 'Ben', 'Chen', 'Dara', 'Eli', 'Fatima', 'Goran', 'Hana', 'Ivo', 'Jun', 'Kofi', 'Lena'];

type Template = (int: (lo: number, hi: number) => number, name: string) => { question: string; answer: number; difficulty: 1 | 2 | 3 };

const TEMPLATES: Template[] = [
  (int, name) => {
    const a = int(3, 60), b = int(2, 40);
    return { question: `${name} has ${a} apples and buys ${b} more. How many apples does ${name} have now?`, answer: a + b, difficulty: 1 };
  },
  (int) => {
    const a = int(3, 12), b = int(2, 9);
    return { question: `A box holds ${a} pencils. How many pencils are there in ${b} boxes?`, answer: a * b, difficulty: 1 };
  },
  (int, name) => {
    const b = int(2, 40), a = b + int(1, 60);
    return { question: `${name} had ${a} dollars and spent ${b} dollars. How many dollars are left?`, answer: a - b, difficulty: 1 };
  },
  (int, name) => {
    const a = int(5, 30), b = int(2, 7), c = int(1, 20);
    return { question: `${name} reads ${a} pages a day for ${b} days, and then ${c} more pages. How many pages did ${name} read in total?`, answer: a * b + c, difficulty: 2 };
  },
  (int) => {
    const b = int(2, 9), q = int(2, 12);
    return { question: `${b * q} cookies are shared equally among ${b} children. How many cookies does each child get?`, answer: q, difficulty: 2 };
  },
  (int, name) => {
    const a = int(2, 9), b = int(2, 6), c = a * b + int(1, 30);
    return {
      question: `Pens cost ${a} dollars each. ${name} buys ${b} pens and pays with ${c} dollars. How many dollars of change does ${name} get?`,
      answer: c - a * b,
      difficulty: 3,
    };
  },
  (int) => {
    const a = int(20, 90), b = int(2, 5), c = int(20, 90), d = int(1, 4);
    return {
      question: `A train travels at ${a} km per hour for ${b} hours and then at ${c} km per hour for ${d} hours. How many km does it travel in total?`,
      answer: a * b + c * d,
      difficulty: 3,
    };
  },
];

/** `count` problems from `seed`; problem i uses template i mod 7. */
export function arithmeticProblems(seed: number, count: number): ArithmeticProblem[] {
  const rand = mulberry32(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const out: ArithmeticProblem[] = [];
  for (let i = 0; i < count; i++) {
    const name = NAMES[Math.floor(rand() * NAMES.length)]!;
    const p = TEMPLATES[i % TEMPLATES.length]!(int, name);
    out.push({ id: `arith-${String(i).padStart(3, '0')}`, ...p });
  }
  return out;
}
