"""Schemathesis hooks for scripts/schemathesis.sh (loaded via SCHEMATHESIS_HOOKS).

Four things no schema keyword can say, fixed in generated cases:

1. Whole floats for integer fields (below).
2. `Idempotency-Key`: a key is one request. Schemathesis draws few distinct
   short strings, so two different generated requests would often share a key
   and rightly get 422 IDEMPOTENCY_KEY_REUSED. Every case gets a key of its own
   (its drawn value plus a unique suffix, still 1-255 printable characters).
3. Waits: `waitSeconds` / `wait` up to 60 make a request for a held resource
   wait that long; they are cut to 1 s so a run stays within its request
   timeout (the wait itself is still exercised).
4. `warnBeforeSeconds` must be below the same item's `ttlSeconds` (contract
   section 18), a rule between two fields: in positive cases an item whose
   warning is not below its TTL (or that has no TTL) is sent without it;
   negative cases go out untouched.

JSON Schema (draft 2020-12, which OpenAPI 3.1 uses) counts a whole float such as
`60.0` as an integer, and schemathesis deliberately spells some of the integers
it generates for JSON bodies that way. The service reads its integer fields
(`ttlSeconds`, `expires_in`) strictly, as integer literals, and answers 400 to
`60.0`; no schema keyword can say "an integer written without a fraction", so
with the positive-data check on, every body with an integer would fail on the
spelling alone. This hook writes the whole floats of *positive* cases back as
integers before they are sent; negative cases (real fractions, wrong types) go
out untouched, so the service's refusal of them is still checked.
"""

import itertools

import schemathesis

_unique = itertools.count()


def _integers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str):
            headers[name] = f"{headers[name][:200]}~{next(_unique)}"
    query = case.query or {}
    for name in ("waitSeconds", "wait"):
        value = query.get(name)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            query[name] = 1
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if isinstance(case.body, (list, dict)):
        case.body = _integers(case.body)
    if isinstance(case.body, list):
        for item in case.body:
            if isinstance(item, dict) and "warnBeforeSeconds" in item:
                ttl, warn = item.get("ttlSeconds"), item["warnBeforeSeconds"]
                if not (isinstance(ttl, int) and isinstance(warn, int) and warn < ttl):
                    del item["warnBeforeSeconds"]
