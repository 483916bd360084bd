import type { z } from 'zod';

import { CachefleetError } from '../errors.js';

/** One problem of a request that fails its schema. */
export interface RequestIssue {
  /** Field path such as `test.cache[0].build.recordRange`, or empty for the request itself. */
  path: string;
  /** The value found at `path`, undefined when the field is missing. Absent for unknown fields. */
  value?: unknown;
  message: string;
}

// Maximum length of a value quoted in a message, in characters, so that a large field does not flood the error.
const MAX_VALUE_CHARS = 80;

/**
 * Lists zod's issues of a request with the value found at each path, because zod's own
 * messages name the rule but not the value that broke it.
 */
export function listRequestIssues(error: z.ZodError, input: unknown): RequestIssue[] {
  return error.issues.map((issue) => {
    const path = formatPath(issue.path);
    if (issue.code === 'unrecognized_keys') return { path, message: `${issue.message}. Remove it, or check its spelling` };
    return { path, value: valueAt(input, issue.path), message: issue.message };
  });
}

/**
 * Builds the INVALID_ARGUMENT error of a request that fails its schema: one clause per issue,
 * with the field, the value found there and the rule. `details.issues` contains the same issues
 * as data, for callers such as an HTTP API that return them field by field.
 */
export function invalidRequestError(what: string, error: z.ZodError, input: unknown): CachefleetError {
  const issues = listRequestIssues(error, input);
  const clauses = issues.map((issue) => `${issue.path === '' ? 'the request' : issue.path}${'value' in issue ? ` = ${describeValue(issue.value)}` : ''}: ${issue.message}`);
  return new CachefleetError('INVALID_ARGUMENT', `${what} is invalid: ${clauses.join('; ')}. Correct these fields and submit it again.`, { issues });
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let text = '';
  for (const part of path) {
    text += typeof part === 'number' ? `[${part}]` : `${text === '' ? '' : '.'}${String(part)}`;
  }
  return text;
}

function valueAt(input: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let current = input;
  for (const part of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[part];
  }
  return current;
}

function describeValue(value: unknown): string {
  if (value === undefined) return '(missing)';
  // JSON would print NaN and Infinity as null.
  if (typeof value === 'number') return String(value);
  const text = JSON.stringify(value) ?? String(value);
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}…` : text;
}
