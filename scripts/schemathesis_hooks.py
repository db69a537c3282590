"""Schemathesis hooks for scripts/schemathesis.sh (loaded via SCHEMATHESIS_HOOKS).

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

import schemathesis


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
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if isinstance(case.body, (list, dict)):
        case.body = _integers(case.body)
