/** Fixtures for the GGUF and Ollama sources (also used by the mirror tests). */
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { sha256Hex } from '../../src/core/hash.js';
import { kv, writeGguf, type GgufKV } from '../../src/formats/gguf.js';
import { tempDir, writeSafetensors } from './helpers.js';

/** A tiny llama GGUF (F32 tensors) with context length and chat template; `extra` adds or overrides keys. */
export async function writeTinyGguf(path: string, extra: GgufKV[] = [], tensors = 2): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const base = [
    kv.string('general.architecture', 'llama'), kv.string('general.name', 'Tiny'), kv.uint32('general.file_type', 0),
    kv.uint32('llama.context_length', 2048), kv.string('tokenizer.chat_template', '{{ messages }}'),
  ];
  await writeGguf(path, {
    metadata: [...base.filter((b) => !extra.some((e) => e.key === b.key)), ...extra],
    tensors: Array.from({ length: tensors }, (_, i) => ({ name: `t${i}`, type: 'F32', dims: [4, 2], data: new Uint8Array(32).fill(i + 1) })),
  });
}

/** An Ollama models folder with one model: manifest, config and layers as `ollama pull` leaves them. */
export async function makeOllamaFolder(root: string, model = 'tiny', tag = 'latest', extra: GgufKV[] = []): Promise<Record<string, string>> {
  const gguf = join(tempDir(), 'w.gguf');
  await writeTinyGguf(gguf, extra);
  const layers: Array<[string, Buffer]> = [
    ['application/vnd.ollama.image.model', readFileSync(gguf)],
    ['application/vnd.ollama.image.template', Buffer.from('{{ .Prompt }}')],
    ['application/vnd.ollama.image.license', Buffer.from('\nMIT License\n\nCopyright …\n')],
    ['application/vnd.ollama.image.params', Buffer.from('{"stop":["<|end|>"]}')],
  ];
  const config = Buffer.from(JSON.stringify({ model_format: 'gguf', model_family: 'llama' }));
  mkdirSync(join(root, 'blobs'), { recursive: true });
  const entry = (mediaType: string, data: Buffer) => {
    const hex = sha256Hex(data);
    writeFileSync(join(root, 'blobs', `sha256-${hex}`), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const manifest = {
    schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: entry('application/vnd.docker.container.image.v1+json', config), layers: layers.map(([t, d]) => entry(t, d)),
  };
  const mdir = join(root, 'manifests', 'registry.ollama.ai', 'library', model);
  mkdirSync(mdir, { recursive: true });
  writeFileSync(join(mdir, tag), JSON.stringify(manifest));
  return Object.fromEntries(manifest.layers.map((l) => [l.mediaType, l.digest.slice(7)]));
}

/**
 * Writes a Hugging Face cache repo the way huggingface_hub does: content in blobs/<etag>, each revision a
 * snapshots/<commit>/ folder of relative symlinks into blobs/, branch names in refs/.
 */
export function makeHfCache(hub: string, repoId: string, revisions: Record<string, string>, refs: Record<string, string>): string {
  const repo = join(hub, `models--${repoId.replace('/', '--')}`);
  for (const [commit, source] of Object.entries(revisions)) {
    const walk = (abs: string, rel: string) => {
      for (const name of readdirSync(abs, { withFileTypes: true })) {
        const childRel = rel ? `${rel}/${name.name}` : name.name;
        if (name.isDirectory()) {
          walk(join(abs, name.name), childRel);
          continue;
        }
        const data = readFileSync(join(abs, name.name));
        const blob = join(repo, 'blobs', sha256Hex(data));
        mkdirSync(dirname(blob), { recursive: true });
        writeFileSync(blob, data);
        const link = join(repo, 'snapshots', commit, childRel);
        mkdirSync(dirname(link), { recursive: true });
        symlinkSync(relative(dirname(link), blob), link);
      }
    };
    walk(source, '');
  }
  for (const [ref, commit] of Object.entries(refs)) {
    mkdirSync(dirname(join(repo, 'refs', ref)), { recursive: true });
    writeFileSync(join(repo, 'refs', ref), commit);
  }
  return repo;
}

/** A LoRA adapter folder for `base` (adapter_config.json + adapter_model.safetensors, 64 parameters). */
export function makeAdapter(dir: string, base: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', base_model_name_or_path: base, r: 4, lora_alpha: 8, target_modules: ['q_proj'] }));
  writeSafetensors(join(dir, 'adapter_model.safetensors'), { 'base_model.model.q_proj.lora_A.weight': { shape: [4, 8] }, 'base_model.model.q_proj.lora_B.weight': { shape: [8, 4] } });
  writeFileSync(join(dir, 'README.md'), '---\nlibrary_name: peft\n---\n');
  return dir;
}
