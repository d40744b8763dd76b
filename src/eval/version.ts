/**
 * The evaluation harness's version, recorded in every result file. Bump it when a change could move a score
 * for the same model, tasks, decoding and seed (prompt building, answer extraction, scoring rules, statistics),
 * so that results made by different harnesses are never compared as if they were alike.
 */
export const HARNESS_VERSION = 'distillery-eval/2';
