/** What a request is for: the route families of the distribution spec plus the harness's own endpoints. */
export type RouteKind = 'ping' | 'manifest' | 'blob' | 'upload' | 'tags' | 'catalog' | 'token' | 'origin';

/** Which requests a fault applies to. Every given field must match; an empty match takes every request. */
export interface FaultMatch {
  /** Route kind(s). `origin` is the redirect target's blob route. */
  kind?: RouteKind | RouteKind[];
  /** HTTP method(s), upper case, e.g. `'GET'`. */
  method?: string | string[];
  /** Repository name, e.g. `library/alpine`. */
  name?: string;
  /** Blob or manifest digest (a manifest fetched by tag matches the digest the tag resolves to). */
  digest?: string;
  /** A manifest's reference as requested: a tag or a digest. */
  reference?: string;
}

/**
 * What a fault does. Body faults (`cut`, `stall`, `corrupt`, `throttle`, `ignore-range`) only apply to
 * responses that carry a body (GET); `status` and `redirect` answer instead of the normal handler.
 */
export type FaultAction =
  /** Sends `afterBytes` bytes of the body, then destroys the socket. */
  | { type: 'cut'; afterBytes: number }
  /** Sends `afterBytes` bytes of the body, then sends nothing more and keeps the socket open. */
  | { type: 'stall'; afterBytes: number }
  /** Flips bits (XOR `mask`, default 0xff) of the byte at absolute `offset` of the blob or manifest. */
  | { type: 'corrupt'; offset: number; mask?: number }
  /** Sends the body at about `bytesPerSecond`. */
  | { type: 'throttle'; bytesPerSecond: number }
  /** Answers 200 with the whole body even when the request had a `Range` header. */
  | { type: 'ignore-range' }
  /**
   * Answers `status` with a spec error body (`TOOMANYREQUESTS` for 429, `UNAVAILABLE` for 503,
   * `UNKNOWN` otherwise) and, when given, `Retry-After` (seconds, or an HTTP-date for a Date).
   */
  | { type: 'status'; status: number; retryAfter?: number | Date; code?: string; message?: string }
  /**
   * Redirects a blob GET to the harness's second origin (`registry.origin`), as S3-backed registries
   * do. `status` defaults to 307.
   */
  | { type: 'redirect'; status?: 301 | 302 | 303 | 307 | 308 };

/** A fault to install: where it applies, what it does, and how many times. */
export interface FaultRule {
  match?: FaultMatch;
  action: FaultAction;
  /**
   * How many matching requests it affects. Defaults to 1 for `cut`, `stall`, `corrupt` and `status`
   * (the "first attempt only" shape retries are tested with) and to Infinity for `throttle`,
   * `ignore-range` and `redirect`.
   */
  times?: number;
}

/** An installed fault: how often it fired and how to remove it. */
export interface FaultHandle {
  readonly id: number;
  readonly rule: Readonly<FaultRule>;
  /** Requests it has affected so far. */
  readonly hits: number;
  /** Requests it will still affect. */
  readonly remaining: number;
  /** Uninstalls it. */
  remove(): void;
}

/** The request facts a fault is matched against. */
export interface FaultSubject {
  kind: RouteKind;
  method: string;
  name?: string | undefined;
  digest?: string | undefined;
  reference?: string | undefined;
}

/** Installs and matches faults; `registry.faults` is one of these. */
export interface FaultController {
  /** Installs a fault; faults are consulted in the order they were added. */
  add(rule: FaultRule): FaultHandle;
  /** Every installed fault, including spent ones. */
  list(): FaultHandle[];
  /** Uninstalls every fault. */
  clear(): void;
}

/** The faults that apply to one response, each already counted as a hit. */
export interface AppliedFaults {
  status?: Extract<FaultAction, { type: 'status' }>;
  redirect?: Extract<FaultAction, { type: 'redirect' }>;
  cut?: Extract<FaultAction, { type: 'cut' }>;
  stall?: Extract<FaultAction, { type: 'stall' }>;
  corrupt?: Extract<FaultAction, { type: 'corrupt' }>;
  throttle?: Extract<FaultAction, { type: 'throttle' }>;
  ignoreRange?: Extract<FaultAction, { type: 'ignore-range' }>;
  /** Names of the applied faults, for the request log. */
  names: string[];
}

const BODY_FAULTS = new Set(['cut', 'stall', 'corrupt', 'throttle', 'ignore-range']);

interface Entry {
  id: number;
  rule: FaultRule;
  hits: number;
  limit: number;
  removed: boolean;
}

function asList<T>(value: T | T[] | undefined): T[] | undefined {
  return value === undefined ? undefined : Array.isArray(value) ? value : [value];
}

function matches(match: FaultMatch | undefined, subject: FaultSubject): boolean {
  if (match === undefined) return true;
  const kinds = asList(match.kind);
  if (kinds && !kinds.includes(subject.kind)) return false;
  const methods = asList(match.method);
  if (methods && !methods.map((method) => method.toUpperCase()).includes(subject.method)) return false;
  if (match.name !== undefined && match.name !== subject.name) return false;
  if (match.digest !== undefined && match.digest !== subject.digest) return false;
  if (match.reference !== undefined && match.reference !== subject.reference) return false;
  return true;
}

function defaultTimes(action: FaultAction): number {
  return action.type === 'throttle' || action.type === 'ignore-range' || action.type === 'redirect'
    ? Infinity
    : 1;
}

const ACTION_TYPES = new Set(['cut', 'stall', 'corrupt', 'throttle', 'ignore-range', 'status', 'redirect']);
const ROUTE_KINDS = new Set(['ping', 'manifest', 'blob', 'upload', 'tags', 'catalog', 'token', 'origin']);

const MATCH_KEYS = new Set(['kind', 'method', 'name', 'digest', 'reference']);

function validate(rule: FaultRule): void {
  const action = rule.action;
  // A misspelt type or kind (from JavaScript, or a cast) would install a fault that never fires: the
  // test using it would pass without testing anything.
  if (typeof action !== 'object' || action === null || !ACTION_TYPES.has(action.type)) {
    throw new RangeError(
      `fault action type ${JSON.stringify((action as { type?: unknown } | null)?.type)} is not one of ${[...ACTION_TYPES].join(', ')}`,
    );
  }
  for (const key of Object.keys(rule.match ?? {})) {
    // A misspelt match key would match every request instead of the one meant.
    if (!MATCH_KEYS.has(key)) {
      throw new RangeError(
        `fault match key ${JSON.stringify(key)} is not one of ${[...MATCH_KEYS].join(', ')}`,
      );
    }
  }
  const kinds = rule.match?.kind;
  for (const kind of kinds === undefined ? [] : Array.isArray(kinds) ? kinds : [kinds]) {
    if (!ROUTE_KINDS.has(kind)) {
      throw new RangeError(
        `fault match kind ${JSON.stringify(kind)} is not one of ${[...ROUTE_KINDS].join(', ')}`,
      );
    }
  }
  const nonNegative = (value: number, what: string) => {
    if (!Number.isInteger(value) || value < 0)
      throw new RangeError(`fault ${action.type}: ${what} must be an integer >= 0`);
  };
  if (action.type === 'cut' || action.type === 'stall') nonNegative(action.afterBytes, 'afterBytes');
  if (action.type === 'corrupt') {
    nonNegative(action.offset, 'offset');
    // A mask of 0 (or one that is no byte) flips nothing: the fault would count hits and change nothing.
    if (
      action.mask !== undefined &&
      !(Number.isInteger(action.mask) && action.mask >= 1 && action.mask <= 255)
    ) {
      throw new RangeError('fault corrupt: mask must be an integer from 1 to 255');
    }
  }
  if (
    action.type === 'redirect' &&
    action.status !== undefined &&
    ![301, 302, 303, 307, 308].includes(action.status)
  ) {
    throw new RangeError('fault redirect: status must be 301, 302, 303, 307 or 308');
  }
  if (action.type === 'throttle' && !(action.bytesPerSecond > 0)) {
    throw new RangeError('fault throttle: bytesPerSecond must be > 0');
  }
  if (action.type === 'status' && !(action.status >= 400 && action.status <= 599)) {
    throw new RangeError('fault status: status must be 4xx or 5xx');
  }
  if (
    rule.times !== undefined &&
    rule.times !== Number.POSITIVE_INFINITY &&
    !(Number.isInteger(rule.times) && rule.times >= 0)
  ) {
    throw new RangeError('fault times must be an integer >= 0, or Infinity');
  }
}

/** Creates the fault table a registry consults for every request. */
export function createFaultController(): FaultController & {
  /** Picks and counts the faults that apply to a request. `hasBody` is false for HEAD and bodiless answers. */
  take(subject: FaultSubject, hasBody: boolean, canRedirect: boolean): AppliedFaults;
} {
  const entries: Entry[] = [];
  let nextId = 1;

  const handle = (entry: Entry): FaultHandle => ({
    id: entry.id,
    rule: entry.rule,
    get hits() {
      return entry.hits;
    },
    get remaining() {
      return entry.removed ? 0 : Math.max(0, entry.limit - entry.hits);
    },
    remove() {
      entry.removed = true;
      const position = entries.indexOf(entry);
      if (position >= 0) entries.splice(position, 1);
    },
  });

  return {
    add(rule) {
      validate(rule);
      const entry: Entry = {
        id: nextId++,
        rule: { ...rule },
        hits: 0,
        limit: rule.times ?? defaultTimes(rule.action),
        removed: false,
      };
      entries.push(entry);
      return handle(entry);
    },
    list() {
      return entries.map(handle);
    },
    clear() {
      for (const entry of entries) entry.removed = true;
      entries.length = 0;
    },
    take(subject, hasBody, canRedirect) {
      const applied: AppliedFaults = { names: [] };
      const live = entries.filter((entry) => entry.hits < entry.limit && matches(entry.rule.match, subject));
      const use = (entry: Entry) => {
        entry.hits += 1;
        applied.names.push(entry.rule.action.type);
      };
      // An error answer replaces the response, so it wins over everything else and consumes nothing else.
      const status = live.find((entry) => entry.rule.action.type === 'status');
      if (status) {
        use(status);
        applied.status = status.rule.action as AppliedFaults['status'];
        return applied;
      }
      const redirect = canRedirect ? live.find((entry) => entry.rule.action.type === 'redirect') : undefined;
      if (redirect) {
        use(redirect);
        applied.redirect = redirect.rule.action as AppliedFaults['redirect'];
        return applied;
      }
      if (!hasBody) return applied;
      const taken = new Set<string>();
      for (const entry of live) {
        const type = entry.rule.action.type;
        if (!BODY_FAULTS.has(type) || taken.has(type)) continue;
        taken.add(type);
        use(entry);
        const action = entry.rule.action;
        if (action.type === 'cut') applied.cut = action;
        else if (action.type === 'stall') applied.stall = action;
        else if (action.type === 'corrupt') applied.corrupt = action;
        else if (action.type === 'throttle') applied.throttle = action;
        else if (action.type === 'ignore-range') applied.ignoreRange = action;
      }
      return applied;
    },
  };
}
