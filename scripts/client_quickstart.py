"""The seeds' quick start (000: reserve, list, unreserve, a conflict; 001: the
activeReservations listing) through a client generated from the service's own
OpenAPI document by openapi-python-client. Checks statuses and that the
generated models hand back typed values: times as timezone-aware datetimes,
the release token as a UUID, statuses as the generated enum.

    python client_quickstart.py BASE_URL API_KEY   (the generated package
    `cooplocker_client` on PYTHONPATH; run by scripts/generated-client.sh)
"""

import datetime
import sys
import uuid

from cooplocker_client import AuthenticatedClient
from cooplocker_client.api.reservations import list_, list_active, reserve, unreserve
from cooplocker_client.models import (
    ItemStatus,
    ReleaseItem,
    ReservationPage,
    ReserveItem,
    Results,
)
from cooplocker_client.types import UNSET


def check(condition, message):
    if not condition:
        raise SystemExit(f"client quick start: FAILED: {message}")


def ok(response, model):
    """The parsed body of a 200, else a failure naming what came back."""
    check(
        response.status_code == 200 and isinstance(response.parsed, model),
        f"expected 200 {model.__name__}, got {response.status_code}: {response.content!r}",
    )
    return response.parsed


def utc_datetime(value, what):
    check(isinstance(value, datetime.datetime), f"{what} is {value!r}, not a datetime")
    check(value.utcoffset() == datetime.timedelta(0), f"{what} {value} is not UTC")
    return value


def main(base_url, key):
    client = AuthenticatedClient(
        base_url=base_url, token=key, prefix="", auth_header_name="X-Api-Key"
    )
    resource = f"my-first-lock-{uuid.uuid4()}"

    # Make your first reservation.
    results = ok(
        reserve.sync_detailed(
            client=client, body=[ReserveItem(requester="my-app", resource=resource)]
        ),
        Results,
    ).results
    check(len(results) == 1, f"one result expected, got {results}")
    first = results[0]
    check(first.status is ItemStatus.RESERVED, f"status {first.status!r}")
    check(first.resource == resource and first.requester == "my-app", f"{first}")
    check(
        isinstance(first.release_token, uuid.UUID),
        f"releaseToken {first.release_token!r} is not a UUID",
    )
    reserved_at = utc_datetime(first.reserved_at, "reservedAt")
    check(first.expires_at is None, f"no TTL, yet expiresAt {first.expires_at!r}")
    check(isinstance(first.fencing_token, int), f"fencingToken {first.fencing_token!r}")

    # Check your active reservations (both names the seeds use).
    for listing in (list_, list_active):
        page = ok(listing.sync_detailed(client=client, prefix=resource), ReservationPage)
        check(len(page.reservations) == 1, f"{listing.__name__}: {page.reservations}")
        row = page.reservations[0]
        check(row.resource == resource and row.requester == "my-app", f"{row}")
        check(utc_datetime(row.reserved_at, "reservedAt") == reserved_at, f"{row}")
        check(row.expires_at is None, f"expiresAt {row.expires_at!r}")
        check(row.fencing_token == first.fencing_token, f"{row}")
        check(page.next_cursor is None, f"nextCursor {page.next_cursor!r}")

    # Try a conflict while it is held.
    conflict = ok(
        reserve.sync_detailed(
            client=client, body=[ReserveItem(requester="another-app", resource=resource)]
        ),
        Results,
    ).results[0]
    check(conflict.status is ItemStatus.ALREADY_HELD, f"status {conflict.status!r}")
    check(conflict.held_by == "my-app", f"heldBy {conflict.held_by!r}")
    check(conflict.release_token is UNSET, f"releaseToken {conflict.release_token!r}")

    # Release the reservation with its token.
    released = ok(
        unreserve.sync_detailed(
            client=client,
            body=[
                ReleaseItem(
                    requester="my-app",
                    resource=resource,
                    release_token=str(first.release_token),
                )
            ],
        ),
        Results,
    ).results
    check(
        [(r.resource, r.requester, r.status) for r in released]
        == [(resource, "my-app", ItemStatus.UNRESERVED)],
        f"{released}",
    )
    page = ok(list_.sync_detailed(client=client, prefix=resource), ReservationPage)
    check(page.reservations == [], f"still listed: {page.reservations}")

    # With a TTL, expiresAt is a time too.
    leased = ok(
        reserve.sync_detailed(
            client=client,
            body=[ReserveItem(requester="my-app", resource=resource, ttl_seconds=60)],
        ),
        Results,
    ).results[0]
    check(leased.status is ItemStatus.RESERVED, f"status {leased.status!r}")
    expires_at = utc_datetime(leased.expires_at, "expiresAt")
    lease = expires_at - utc_datetime(leased.reserved_at, "reservedAt")
    check(lease == datetime.timedelta(seconds=60), f"TTL 60 s, got {lease}")
    check(leased.fencing_token > first.fencing_token, "fencing tokens must grow")
    print("client quick start: reserve, list, conflict, unreserve and a TTL all typed and OK")


if __name__ == "__main__":
    main(*sys.argv[1:3])
