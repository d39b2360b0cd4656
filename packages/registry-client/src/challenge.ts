/** One authentication challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1). */
export interface Challenge {
  /** The scheme, lowercased: `bearer`, `basic`. */
  scheme: string;
  /** The auth-params with lowercased names (`realm`, `service`, `scope`, `error`); values unquoted. */
  params: Record<string, string>;
  /** The token68 form some schemes use instead of params. */
  token68?: string;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68_CHAR = /[-._~+/0-9A-Za-z]/;

/**
 * Parses `WWW-Authenticate` values (one string, or one per header line) into challenges: several
 * challenges per line, quoted-string params with backslash escapes, token68. Lenient: a malformed tail
 * is dropped, never thrown, because a registry's bad header must not hide its status code.
 */
export function parseChallenges(header: string | readonly string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (typeof header !== 'string') return header.flatMap((line) => parseChallenges(line));
  const text = header;
  const challenges: Challenge[] = [];
  let position = 0;

  const skipSpaces = (): void => {
    while (position < text.length && (text[position] === ' ' || text[position] === '\t')) position++;
  };
  const readToken = (): string => {
    const start = position;
    while (position < text.length && TCHAR.test(text[position]!)) position++;
    return text.slice(start, position);
  };
  const readQuoted = (): string | undefined => {
    // Caller saw the opening quote.
    position++;
    let value = '';
    while (position < text.length) {
      const char = text[position]!;
      if (char === '\\' && position + 1 < text.length) {
        value += text[position + 1];
        position += 2;
      } else if (char === '"') {
        position++;
        return value;
      } else {
        value += char;
        position++;
      }
    }
    return undefined;
  };
  const skipToComma = (): void => {
    while (position < text.length && text[position] !== ',') position++;
  };

  let current: Challenge | undefined;
  while (position < text.length) {
    skipSpaces();
    if (text[position] === ',') {
      position++;
      continue;
    }
    const token = readToken();
    if (token.length === 0) {
      // Not a token: garbage; drop up to the next comma.
      position++;
      skipToComma();
      continue;
    }
    const afterToken = position;
    skipSpaces();
    if (current && text[position] === '=' && text[position + 1] !== '=') {
      // auth-param of the current challenge: name BWS "=" BWS ( token / quoted-string )
      position++;
      skipSpaces();
      let value: string | undefined;
      if (text[position] === '"') value = readQuoted();
      else {
        value = readToken();
        if (value.length === 0) value = undefined;
      }
      if (value === undefined) {
        skipToComma();
        continue;
      }
      current.params[token.toLowerCase()] = value;
      continue;
    }
    if (current && text[position] === '=') {
      // `name==…` is neither an auth-param nor a scheme: junk up to the next comma.
      skipToComma();
      continue;
    }
    // A new challenge: scheme [ 1*SP ( token68 / #auth-param ) ]
    current = { scheme: token.toLowerCase(), params: Object.create(null) as Record<string, string> };
    challenges.push(current);
    if (position > afterToken) {
      // Look for a token68: characters of the token68 set followed by '=' padding then end or comma.
      const save = position;
      while (position < text.length && TOKEN68_CHAR.test(text[position]!)) position++;
      const bodyEnd = position;
      while (text[position] === '=') position++;
      const end = position;
      skipSpaces();
      const padded = end > bodyEnd;
      const terminated = position >= text.length || text[position] === ',';
      const looksLikeParam = padded && end - bodyEnd === 1 && !terminated;
      if (bodyEnd > save && terminated && !looksLikeParam) {
        current.token68 = text.slice(save, end);
      } else {
        position = save;
      }
    }
  }
  return challenges;
}

/** Formats challenges back into one `WWW-Authenticate` value; `parseChallenges` reads it back equal. */
export function formatChallenges(challenges: readonly Challenge[]): string {
  return challenges
    .map((challenge) => {
      const params = Object.entries(challenge.params).map(
        ([name, value]) => `${name}="${value.replace(/["\\]/g, (char) => `\\${char}`)}"`,
      );
      const parts = challenge.token68 === undefined ? params.join(', ') : challenge.token68;
      return parts.length === 0 ? challenge.scheme : `${challenge.scheme} ${parts}`;
    })
    .join(', ');
}

/** Picks the challenge ocipull answers: Bearer first (registries prefer it), then Basic. */
export function pickChallenge(challenges: readonly Challenge[]): Challenge | undefined {
  return (
    challenges.find((challenge) => challenge.scheme === 'bearer') ??
    challenges.find((challenge) => challenge.scheme === 'basic')
  );
}
