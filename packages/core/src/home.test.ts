import { userInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { homeDirectory } from './home.ts';

describe('homeDirectory', () => {
  it('takes HOME when it is set and not empty', () => {
    expect(homeDirectory({ HOME: '/somewhere' })).toBe('/somewhere');
  });

  it('falls back to the password database when HOME is empty or unset, never to a relative path', () => {
    const passwd = userInfo().homedir;
    expect(passwd.startsWith('/')).toBe(true);
    expect(homeDirectory({ HOME: '' })).toBe(passwd);
    expect(homeDirectory({})).toBe(passwd);
  });
});
