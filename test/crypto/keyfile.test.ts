import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createKeyFile,
  generateMasterKey,
  type KdfParams,
  openKeyFile,
  readKeyFileInfo,
} from '../../src/crypto/index.js';
import { CairnError } from '../../src/errors.js';

const tiny: KdfParams = { t: 1, m: 64, p: 1 };

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    return (err as CairnError).code;
  }
  return undefined;
}

/** A valid key file with some fields replaced. */
async function tampered(change: (json: Record<string, unknown>) => void): Promise<Buffer> {
  const bytes = await createKeyFile('pw', generateMasterKey(), tiny);
  const json = JSON.parse(bytes.toString('utf8'));
  change(json);
  return Buffer.from(JSON.stringify(json));
}

describe('key files', () => {
  it('round-trip the master key under any password', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 40 }), async (password) => {
        const master = generateMasterKey();
        const file = await createKeyFile(password, master, tiny);
        expect(await openKeyFile(file, password)).toEqual(master);
      }),
      { numRuns: 30 },
    );
  });

  it('store the documented JSON fields and expose metadata without a password', async () => {
    const created = new Date('2025-01-02T03:04:05.000Z');
    const meta = { created, hostname: 'box', username: 'ann' };
    const file = await createKeyFile('pw', generateMasterKey(), tiny, meta);
    const json = JSON.parse(file.toString('utf8'));
    expect(Object.keys(json).sort()).toEqual(
      ['created', 'data', 'hostname', 'kdf', 'params', 'salt', 'username', 'version'].sort(),
    );
    expect(json).toMatchObject({ version: 1, kdf: 'argon2id', params: tiny });
    expect(Buffer.from(json.salt, 'base64').length).toBe(16);
    expect(readKeyFileInfo(file)).toEqual({
      kdf: 'argon2id',
      params: tiny,
      created: created.toISOString(),
      hostname: 'box',
      username: 'ann',
    });
  });

  it('fill in host, user and time by default', async () => {
    const info = readKeyFileInfo(await createKeyFile('pw', generateMasterKey(), tiny));
    expect(info.hostname.length).toBeGreaterThan(0);
    expect(Date.now() - Date.parse(info.created)).toBeLessThan(60_000);
  });

  it('use a fresh salt each time', async () => {
    const master = generateMasterKey();
    const a = JSON.parse((await createKeyFile('pw', master, tiny)).toString());
    const b = JSON.parse((await createKeyFile('pw', master, tiny)).toString());
    expect(a.salt).not.toBe(b.salt);
    expect(a.data).not.toBe(b.data);
  });

  it('reject a wrong password with WrongPassword', async () => {
    const file = await createKeyFile('right', generateMasterKey(), tiny);
    await expect(openKeyFile(file, 'wrong', 'key 5e1f')).rejects.toThrow(
      /^wrong password for key 5e1f$/,
    );
    expect(await codeOf(openKeyFile(file, 'wrong'))).toBe('WrongPassword');
    expect(await codeOf(openKeyFile(file, ''))).toBe('WrongPassword');
  });

  it('treat changed salt or parameters as a wrong password (they only change the key)', async () => {
    const salt = Buffer.alloc(16, 1).toString('base64');
    expect(await codeOf(openKeyFile(await tampered((j) => (j.salt = salt)), 'pw'))).toBe(
      'WrongPassword',
    );
    const params = { t: 2, m: 64, p: 1 };
    expect(await codeOf(openKeyFile(await tampered((j) => (j.params = params)), 'pw'))).toBe(
      'WrongPassword',
    );
  });
});

describe('malformed and hostile key files are Damaged', () => {
  const dataOf = (n: number) => Buffer.alloc(n).toString('base64');
  const cases: [string, (j: Record<string, unknown>) => void][] = [
    ['unknown version', (j) => (j.version = 2)],
    ['missing version', (j) => delete j.version],
    ['other kdf', (j) => (j.kdf = 'scrypt')],
    ['params missing', (j) => delete j.params],
    ['huge memory', (j) => (j.params = { t: 1, m: 100 * 1024 * 1024 * 1024, p: 1 })],
    ['huge t', (j) => (j.params = { t: 1e9, m: 64, p: 1 })],
    ['huge p', (j) => (j.params = { t: 1, m: 64 * 1024, p: 1024 })],
    ['m below 8p', (j) => (j.params = { t: 1, m: 8, p: 4 })],
    ['fractional t', (j) => (j.params = { t: 1.5, m: 64, p: 1 })],
    ['string m', (j) => (j.params = { t: 1, m: '64', p: 1 })],
    ['short salt', (j) => (j.salt = dataOf(8))],
    ['salt not a string', (j) => (j.salt = 12)],
    ['salt not base64', (j) => (j.salt = '!!!!!!!!!!!!!!!!!!!!!!!!')],
    ['data truncated', (j) => (j.data = dataOf(100))],
    ['data with junk characters', (j) => (j.data = `${j.data}*`)],
    ['data missing', (j) => delete j.data],
    ['created not a date', (j) => (j.created = 'yesterday')],
    ['hostname not a string', (j) => (j.hostname = 7)],
    ['username missing', (j) => delete j.username],
  ];

  it.each(cases)('%s', async (_name, change) => {
    const file = await tampered(change);
    expect(await codeOf(openKeyFile(file, 'pw'))).toBe('Damaged');
    expect(() => readKeyFileInfo(file)).toThrow(/^key file is damaged: /);
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['not JSON', Buffer.from('{"version":1,')],
    ['a JSON array', Buffer.from('[1,2]')],
    ['JSON null', Buffer.from('null')],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d])],
    ['far too large', Buffer.alloc(1024 * 1024, 0x20)],
  ])('%s', async (_name, bytes) => {
    expect(await codeOf(openKeyFile(bytes, 'pw'))).toBe('Damaged');
    expect(() => readKeyFileInfo(bytes, 'key 99')).toThrow(/^key 99 is damaged: /);
  });

  it('a flipped bit in the sealed master key fails authentication', async () => {
    const file = await tampered((j) => {
      const data = Buffer.from(j.data as string, 'base64');
      data[40]! ^= 0x10;
      j.data = data.toString('base64');
    });
    expect(await codeOf(openKeyFile(file, 'pw'))).toBe('WrongPassword');
  });
});
