import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { backendContract } from './backend-contract.js';

async function tempRoot(): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-local-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Every file and directory below `dir`, relative, directories with a trailing `/`. */
async function tree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      out.push(`${prefix}${e.name}/`, ...(await tree(join(dir, e.name), `${prefix}${e.name}/`)));
    } else out.push(prefix + e.name);
  }
  return out.sort();
}

describe('LocalBackend: backend contract', () => {
  backendContract(async () => {
    const { dir, cleanup } = await tempRoot();
    return { backend: new LocalBackend(join(dir, 'repo')), cleanup };
  });
});

describe('LocalBackend: local files', () => {
  it('creates files 0600 and directories 0700, including a missing root', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const root = join(dir, 'a', 'repo');
      const backend = new LocalBackend(root);
      await backend.write('data/ab/pack', Buffer.from('x'));
      expect(backend.location).toBe(root);
      for (const d of [join(dir, 'a'), root, join(root, 'data'), join(root, 'data/ab')]) {
        expect((await stat(d)).mode & 0o777).toBe(0o700);
      }
      expect((await stat(join(root, 'data/ab/pack'))).mode & 0o777).toBe(0o600);
      await backend.write('locks/l', Buffer.from('y'), { overwrite: true });
      expect((await stat(join(root, 'locks/l'))).mode & 0o777).toBe(0o600);
    } finally {
      await cleanup();
    }
  });

  it('leaves no temporary files behind, also after a refused write', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const backend = new LocalBackend(dir);
      await backend.write('config', Buffer.from('c'));
      await backend.write('data/00/p', [Buffer.from('a'), Buffer.from('b')]);
      await backend.write('locks/l', Buffer.from('1'));
      await backend.write('locks/l', Buffer.from('2'), { overwrite: true });
      await expect(backend.write('config', Buffer.from('again'))).rejects.toThrow(/exists/);
      expect(await tree(dir)).toEqual([
        'config',
        'data/',
        'data/00/',
        'data/00/p',
        'locks/',
        'locks/l',
      ]);
    } finally {
      await cleanup();
    }
  });

  it('does not list temporary files left by a crashed writer', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const backend = new LocalBackend(dir);
      await backend.write('index/a', Buffer.from('a'));
      const { writeFile } = await import('node:fs/promises');
      await writeFile(join(dir, 'index', '.tmp-deadbeef'), 'partial');
      const names: string[] = [];
      for await (const info of backend.list('index')) names.push(info.name);
      expect(names).toEqual(['index/a']);
    } finally {
      await cleanup();
    }
  });

  it('writes an object piece by piece, visible only once committed under its name', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const backend = new LocalBackend(dir);
      const w = backend.startObject('data');
      const parts = [
        Buffer.from('pie'),
        Buffer.alloc(0),
        Buffer.from('ce'),
        Buffer.alloc(70_000, 1),
      ];
      // Overlapping appends land in call order.
      await Promise.all(parts.map((p) => w.append(p)));
      const listed = async () => {
        const names: string[] = [];
        for await (const info of backend.list('data')) names.push(info.name);
        return names;
      };
      expect(await listed()).toEqual([]);
      await w.commit('data/ab/obj');
      expect((await backend.read('data/ab/obj')).equals(Buffer.concat(parts))).toBe(true);
      expect(await listed()).toEqual(['data/ab/obj']);
      expect((await stat(join(dir, 'data/ab/obj'))).mode & 0o777).toBe(0o600);
      // Never replaces an object; what was written goes away with the refusal.
      const again = backend.startObject('data');
      await again.append(Buffer.from('other'));
      await expect(again.commit('data/ab/obj')).rejects.toThrow(/exists/);
      // An aborted object leaves nothing, nor does one never appended to.
      const aborted = backend.startObject('data');
      await aborted.append(Buffer.from('gone'));
      await aborted.abort();
      await backend.startObject('index').abort();
      expect(await tree(dir)).toEqual(['data/', 'data/ab/', 'data/ab/obj']);
      expect((await backend.read('data/ab/obj')).equals(Buffer.concat(parts))).toBe(true);
    } finally {
      await cleanup();
    }
  });

  it('recreates a folder deleted behind its back', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const backend = new LocalBackend(dir);
      await backend.write('data/00/a', Buffer.from('a'));
      await rm(join(dir, 'data'), { recursive: true });
      await backend.write('data/00/b', Buffer.from('b'));
      expect((await backend.read('data/00/b')).toString()).toBe('b');
    } finally {
      await cleanup();
    }
  });

  it('refuses use after close', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const backend = new LocalBackend(dir);
      await backend.close();
      await expect(backend.write('config', Buffer.from('c'))).rejects.toThrow(/closed/);
    } finally {
      await cleanup();
    }
  });
});
