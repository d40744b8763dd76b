/**
 * Dumps the refresh suite (seed 0) as JSONL for bench/refresh-feasibility.py.
 * Usage: npx tsx bench/refresh-dump.ts OUT_DIR [full|fast] [KNOBS_JSON]
 *   → OUT_DIR/{corpus,sdft,v2,retention}.jsonl and meta.json; KNOBS_JSON overrides REFRESH_KNOBS (experiments).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateRefreshSuite, libNamespace, v1SolutionFor, type RefreshKnobs } from '../src/demo/refresh-suite.js';

const dir = process.argv[2] ?? '/tmp/refresh/full';
const size = (process.argv[3] ?? 'full') as 'full' | 'fast';
const knobs = JSON.parse(process.argv[4] ?? '{}') as Partial<RefreshKnobs>;
const s = generateRefreshSuite({ seed: 0, size, knobs });
mkdirSync(dir, { recursive: true });
const write = (file: string, rows: unknown[]): void => writeFileSync(join(dir, file), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
write('corpus.jsonl', s.corpus);
write('sdft.jsonl', s.sdftData);
write('v2.jsonl', s.v2Tasks.map((t) => ({ ...t, v1_solution: v1SolutionFor(t.prompt) })));
write('retention.jsonl', s.retentionTasks);
writeFileSync(join(dir, 'meta.json'), JSON.stringify({ libV1: s.libV1, libV2: s.libV2, changelog: s.changelog, alphabet: s.alphabet, stop: s.stop, knobs, nsV1: libNamespace(s.libV1, 'v1'), nsV2: libNamespace(s.libV2, 'v2') }) + '\n');
const chars = s.corpus.reduce((a, d) => a + d.prompt.length + d.completion.length, 0);
console.log(`${dir}: ${s.corpus.length} corpus docs (mean ${(chars / s.corpus.length).toFixed(0)} chars), ${s.sdftData.length} sdft, ${s.v2Tasks.length} v2 tasks, ${s.retentionTasks.length} retention`);
