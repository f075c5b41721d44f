"""requests list/approve/reject: the administrator's side of certificate requests that wait for approval."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from otpki.cli.common import console, engine, handle_errors, print_json
from trustlists.enums import RequestStatus
from trustlists.errors import RequestNotFound

if TYPE_CHECKING:
    from trustlists.requests import CertificateRequest

requests_app = typer.Typer(help="Certificate requests waiting for approval: list, approve, reject.",
                           no_args_is_help=True)


def _json(req: "CertificateRequest", owner_name: str | None) -> dict[str, Any]:
    data = req.model_dump(mode="json", exclude={"csr_der"})
    data["owner"] = owner_name
    return data


def _unknown(request_id: str) -> RequestNotFound:
    return RequestNotFound(f"no certificate request with id {request_id!r}; `otpki requests list` shows them")


@requests_app.command("list")
@handle_errors
def list_(
    status: Annotated[RequestStatus | None, typer.Option(help="Only requests in this status")] = None,
    group: Annotated[str | None, typer.Option(help="Only requests of this certificate group")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List certificate requests (oldest first): who asked, for what, and where each one stands."""
    with engine() as (eng, _):
        reqs = eng.requests.list(status=status, group=group)
        names = {o.id: o.name for o in eng.registry.list()}
    if json_out:
        print_json([_json(r, names.get(r.owner_id)) for r in reqs])
        return
    from rich.table import Column, Table

    from trustlists.requests import RequestKind

    # The id is copied from here into `approve`/`reject`: never cut it.
    table = Table(Column("id", no_wrap=True, min_width=36), Column("status", no_wrap=True, min_width=8), "kind",
                  "group", "owner", "submitted", "serial / reason")
    for r in reqs:
        what = (f"new-key {r.key_type.value if r.key_type else ''}" if r.kind is RequestKind.NEW_KEY
                else r.kind.value)
        table.add_row(r.id, r.status.value, what, r.group, names.get(r.owner_id, r.owner_id),
                      f"{r.submitted_at:%Y-%m-%d %H:%M}", r.serial or r.reason or "-")
    console.print(table)
    console.print(f"{len(reqs)} requests")


@requests_app.command("approve")
@handle_errors
def approve(request_id: Annotated[str, typer.Argument(metavar="ID", help="Request id (from `requests list`)")]
            ) -> None:
    """Approve a pending request: a CSR is signed now; a server-generated key, or a device's own CSR (EST), when the
    owner collects it."""
    from trustlists.requests import RequestKind

    with engine() as (eng, s):
        try:
            req = eng.requests.approve(request_id, actor=s.actor())
        except RequestNotFound:
            raise _unknown(request_id) from None
    if req.status is RequestStatus.ISSUED:
        console.print(f"approved request {req.id}: issued certificate {req.serial}")
    elif req.kind is RequestKind.DEVICE_CSR:
        console.print(f"approved request {req.id}: the certificate is issued when the device sends its request "
                      "again")
    else:
        console.print(f"approved request {req.id}: the key and certificate are made when the owner collects them")


@requests_app.command("reject")
@handle_errors
def reject(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="Request id (from `requests list`)")],
    reason: Annotated[str, typer.Option(help="Why (the requester is told)")],
) -> None:
    """Reject a pending request; the requester's next attempt to collect it is refused with the reason."""
    with engine() as (eng, s):
        try:
            req = eng.requests.reject(request_id, actor=s.actor(), reason=reason)
        except RequestNotFound:
            raise _unknown(request_id) from None
    console.print(f"rejected request {req.id}: {req.reason}")
