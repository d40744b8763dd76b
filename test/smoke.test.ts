import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/core/paths.js';

test('package root holds package.json', () => {
  assert.ok(existsSync(join(packageRoot(), 'package.json')));
});
