import type { VaultLayout } from './layout.js';
import { listManifestLocations, modelRefString, readManifest, type Manifest } from './manifest.js';
import { lookupManifest } from './refs.js';

/**
 * The lineage forest: a model's children are the models distilled from it (lineage.parent) and the adapters
 * trained for it (details.base_model). Parents are matched by content digest, so a child still finds its
 * parent after a rename or a bundle round trip; a parent that is not in this vault is shown by its recorded
 * reference as a root of its own.
 */

export interface TreeNode {
  ref: string;
  manifest: Manifest | null;
  /** 'distilled' (recipe output), 'adapter', or null for roots. */
  relation: 'distilled' | 'adapter' | null;
  /** For a parent missing from the vault: the reference and digest its children recorded. */
  missing?: { ref: string; digest: string };
  children: TreeNode[];
}

function parentOf(m: Manifest): { digest: string; ref: string; relation: 'distilled' | 'adapter' } | null {
  if (m.lineage) return { digest: m.lineage.parent.digest, ref: m.lineage.parent.ref, relation: 'distilled' };
  const base = m.details?.base_model;
  if (base?.digest) return { digest: base.digest, ref: base.ref ?? base.name ?? base.digest.slice(0, 12), relation: 'adapter' };
  return null;
}

/** The whole forest, or (with `ref`) the one tree that contains that model. */
export function lineageTree(layout: VaultLayout, ref?: string): TreeNode[] {
  const manifests: Manifest[] = [];
  for (const loc of listManifestLocations(layout)) {
    try {
      manifests.push(readManifest(layout, loc.name, loc.version));
    } catch {
      /* unreadable manifests are verify's to report */
    }
  }
  const byDigest = new Map<string, Manifest>();
  for (const m of manifests) if (!byDigest.has(m.digest)) byDigest.set(m.digest, m); // identical copies: the first name
  const nodes = new Map<string, TreeNode>(manifests.map((m) => [modelRefString(m), { ref: modelRefString(m), manifest: m, relation: null, children: [] }]));
  const missingRoots = new Map<string, TreeNode>();
  const roots: TreeNode[] = [];
  for (const m of manifests) {
    const node = nodes.get(modelRefString(m))!;
    const p = parentOf(m);
    if (!p) {
      roots.push(node);
      continue;
    }
    node.relation = p.relation;
    const parent = byDigest.get(p.digest);
    // A model that is its own parent by digest (an unchanged copy) would make a loop; show it as a root.
    if (parent && parent !== m) {
      nodes.get(modelRefString(parent))!.children.push(node);
    } else {
      let ghost = missingRoots.get(p.digest);
      if (!ghost) {
        ghost = { ref: p.ref, manifest: null, relation: null, missing: { ref: p.ref, digest: p.digest }, children: [] };
        missingRoots.set(p.digest, ghost);
        roots.push(ghost);
      }
      ghost.children.push(node);
    }
  }
  if (ref === undefined) return roots;
  const target = modelRefString(lookupManifest(ref, layout));
  const contains = (n: TreeNode): boolean => n.ref === target || n.children.some(contains);
  return roots.filter(contains);
}
