import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CairnError } from '../../src/errors.js';
import type { Backend, ObjectInfo } from '../../src/repo/backend/backend.js';

export interface BackendFixture {
  backend: Backend;
  cleanup(): Promise<void>;
}

async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of it) out.push(info);
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

async function errorOf(promise: Promise<unknown>): Promise<CairnError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    return err as CairnError;
  }
  throw new Error('expected a CairnError, but the call succeeded');
}

const bytes = (s: string) => Buffer.from(s, 'utf8');

/**
 * The behaviour every Backend must show, whatever stores the objects. Each test gets a
 * fresh, empty backend from `makeBackend` and cleans it up afterwards.
 */
export function backendContract(makeBackend: () => Promise<BackendFixture>): void {
  let fixture: BackendFixture;
  let backend: Backend;

  beforeEach(async () => {
    fixture = await makeBackend();
    backend = fixture.backend;
  });

  afterEach(async () => {
    await backend.close();
    await fixture.cleanup();
  });

  describe('write and read', () => {
    it('reads back what was written', async () => {
      await backend.write('config', bytes('hello'));
      expect((await backend.read('config')).toString()).toBe('hello');
    });

    it('stores zero-byte objects', async () => {
      await backend.write('locks/empty', new Uint8Array(0));
      expect((await backend.read('locks/empty')).length).toBe(0);
      expect(await backend.stat('locks/empty')).toEqual({ name: 'locks/empty', size: 0 });
    });

    it('concatenates a multi-part write', async () => {
      const parts = [bytes('ab'), new Uint8Array(0), bytes('cde'), new Uint8Array([0x66])];
      await backend.write('data/00/multi', parts);
      expect((await backend.read('data/00/multi')).toString()).toBe('abcdef');
    });

    it('writes a large multi-part object intact', async () => {
      const parts = Array.from({ length: 2000 }, (_, i) => Buffer.alloc(1000 + (i % 7), i & 0xff));
      await backend.write('data/ff/big', parts);
      expect((await backend.read('data/ff/big')).equals(Buffer.concat(parts))).toBe(true);
    });

    it('keeps its own copy: later changes to the written buffer do not matter', async () => {
      const data = bytes('original');
      await backend.write('snapshots/a', data);
      data.fill(0);
      expect((await backend.read('snapshots/a')).toString()).toBe('original');
    });

    it('handles names in nested folders', async () => {
      await backend.write('data/ab/cd/ef', bytes('deep'));
      expect((await backend.read('data/ab/cd/ef')).toString()).toBe('deep');
    });

    it('writes many objects concurrently into new folders', async () => {
      const names = Array.from({ length: 40 }, (_, i) => `data/${(i % 4).toString(16)}0/o${i}`);
      await Promise.all(names.map((n) => backend.write(n, bytes(n))));
      for (const n of names) expect((await backend.read(n)).toString()).toBe(n);
    });
  });

  describe('range reads', () => {
    beforeEach(async () => {
      await backend.write('data/12/pack', bytes('0123456789'));
    });

    it('returns exactly the requested bytes', async () => {
      const got = await backend.read('data/12/pack', { offset: 3, length: 4 });
      expect(got.toString()).toBe('3456');
      expect((await backend.read('data/12/pack', { offset: 0, length: 10 })).toString()).toBe(
        '0123456789',
      );
      expect((await backend.read('data/12/pack', { offset: 10, length: 0 })).length).toBe(0);
    });

    it('reports a range past the end as Damaged, naming the object', async () => {
      const err = await errorOf(backend.read('data/12/pack', { offset: 8, length: 4 }));
      expect(err.code).toBe('Damaged');
      expect(err.message).toContain('data/12/pack');
    });

    it('reports a missing object as NotFound', async () => {
      const err = await errorOf(backend.read('data/12/nope', { offset: 0, length: 1 }));
      expect(err.code).toBe('NotFound');
    });
  });

  describe('missing objects', () => {
    it('read throws NotFound naming the object', async () => {
      const err = await errorOf(backend.read('index/missing'));
      expect(err.code).toBe('NotFound');
      expect(err.message).toContain('index/missing');
    });

    it('read below a folder that does not exist throws NotFound', async () => {
      expect((await errorOf(backend.read('nowhere/at/all'))).code).toBe('NotFound');
    });

    it('stat returns undefined', async () => {
      expect(await backend.stat('keys/missing')).toBeUndefined();
    });

    it('delete succeeds', async () => {
      await backend.delete('keys/missing');
      await backend.delete('nowhere/at/all');
    });

    it('list of a missing folder is empty', async () => {
      expect(await collect(backend.list('snapshots'))).toEqual([]);
    });
  });

  describe('overwrite', () => {
    it('refuses to replace an existing object by default and keeps the original', async () => {
      await backend.write('keys/k1', bytes('first'));
      const err = await errorOf(backend.write('keys/k1', bytes('second')));
      expect(err.message).toContain('already exists');
      expect((await backend.read('keys/k1')).toString()).toBe('first');
    });

    it('lets exactly one of two racing writers create an object', async () => {
      const results = await Promise.allSettled([
        backend.write('locks/l', bytes('a')),
        backend.write('locks/l', bytes('b')),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(['a', 'b']).toContain((await backend.read('locks/l')).toString());
    });

    it('replaces an existing object when asked', async () => {
      await backend.write('locks/l1', bytes('old, longer content'));
      await backend.write('locks/l1', bytes('new'), { overwrite: true });
      expect((await backend.read('locks/l1')).toString()).toBe('new');
      await backend.write('locks/l2', bytes('fresh'), { overwrite: true });
      expect((await backend.read('locks/l2')).toString()).toBe('fresh');
    });
  });

  describe('stat, list and delete', () => {
    it('stat gives name and size', async () => {
      await backend.write('index/ab12', Buffer.alloc(1234));
      expect(await backend.stat('index/ab12')).toEqual({ name: 'index/ab12', size: 1234 });
    });

    it('list yields every object below a folder, recursively, with sizes', async () => {
      await backend.write('data/00/a', Buffer.alloc(1));
      await backend.write('data/00/b', Buffer.alloc(2));
      await backend.write('data/ff/c', Buffer.alloc(3));
      await backend.write('index/x', Buffer.alloc(4));
      await backend.write('config', Buffer.alloc(5));
      expect(await collect(backend.list('data'))).toEqual([
        { name: 'data/00/a', size: 1 },
        { name: 'data/00/b', size: 2 },
        { name: 'data/ff/c', size: 3 },
      ]);
      expect(await collect(backend.list('index'))).toEqual([{ name: 'index/x', size: 4 }]);
    });

    it('list handles more objects than fit in one batch', async () => {
      const names = Array.from(
        { length: 300 },
        (_, i) => `snapshots/${String(i).padStart(3, '0')}`,
      );
      await Promise.all(names.map((n) => backend.write(n, bytes(n))));
      const listed = await collect(backend.list('snapshots'));
      expect(listed.map((o) => o.name)).toEqual(names);
      expect(listed.every((o) => o.size === 13)).toBe(true);
    });

    it('a consumer may stop listing early', async () => {
      for (const n of ['a', 'b', 'c']) await backend.write(`keys/${n}`, bytes(n));
      for await (const info of backend.list('keys')) {
        expect(info.name).toMatch(/^keys\//);
        break;
      }
      expect(await collect(backend.list('keys'))).toHaveLength(3);
    });

    it('delete removes an object from read, stat and list', async () => {
      await backend.write('locks/gone', bytes('x'));
      await backend.write('locks/kept', bytes('y'));
      await backend.delete('locks/gone');
      expect(await backend.stat('locks/gone')).toBeUndefined();
      expect((await errorOf(backend.read('locks/gone'))).code).toBe('NotFound');
      expect((await collect(backend.list('locks'))).map((o) => o.name)).toEqual(['locks/kept']);
      await backend.write('locks/gone', bytes('again'));
      expect((await backend.read('locks/gone')).toString()).toBe('again');
    });
  });

  describe('object names', () => {
    it.each(['', '/config', '../escape', 'data/../config', 'data//x', 'data/./x', 'keys/'])(
      'rejects %j',
      async (name) => {
        await expect(backend.write(name, bytes('x'))).rejects.toThrow(CairnError);
        await expect(backend.read(name)).rejects.toThrow(CairnError);
      },
    );
  });
}
