"""A small fake of the Stripe endpoints Forgeline calls, for the real `stripe` client in tests.

A raw asyncio HTTP/1.1 server (one request per connection) so faults are real network faults:
answer 500 without doing anything, commit the request then hang past the client's timeout, commit
then drop the connection, or decline the card. Idempotency keys replay the stored response (same
key -> same status and body), as Stripe does, including stored card errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FaultKind = str  # "500" | "timeout_after_commit" | "drop_after_commit" | "decline"

TEST_CARDS: dict[str, dict[str, Any]] = {
    "pm_card_visa": {
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2034,
        "country": "US",
    },
    "pm_card_mastercard": {
        "brand": "mastercard",
        "last4": "4444",
        "exp_month": 6,
        "exp_year": 2033,
        "country": "GB",
    },
    "pm_card_chargeDeclined": {
        "brand": "visa",
        "last4": "0002",
        "exp_month": 1,
        "exp_year": 2035,
        "country": "US",
    },
}


@dataclass
class Fault:
    kind: FaultKind
    path_contains: str = ""
    times: int = 1


@dataclass
class FakeStripe:
    hang_seconds: float = 30.0
    faults: list[Fault] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    # Called after a request committed its effect, before the response is written.
    after_commit: Callable[[str, str], Awaitable[None]] | None = None
    _idempotency: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: asyncio.Server | None = None
    _tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    port: int = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, kind: FaultKind, path_contains: str = "", times: int = 1) -> None:
        self.faults.append(Fault(kind, path_contains, times))

    def successful_charges(self, invoice_id: str | None = None) -> list[dict[str, Any]]:
        return [
            c
            for c in self.charges
            if c["status"] == "succeeded" and (invoice_id is None or c["invoice"] == invoice_id)
        ]

    def invoices_by_number(self, number: str) -> list[dict[str, Any]]:
        return [i for i in self.invoices.values() if i["metadata"].get("invoice_number") == number]

    # ------------------------------------------------------------------ HTTP plumbing

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = (await reader.readexactly(length)).decode() if length else ""
            url = urlsplit(target)
            params = dict(parse_qsl(body or url.query, keep_blank_values=True))
            key = headers.get("idempotency-key")
            self.requests.append((method, url.path, key))
            fault = self._take_fault(url.path)
            if fault is not None and fault.kind == "500":
                await self._respond(writer, 500, _error("api_error", "Injected failure"))
                return
            status, payload, replayed = self._dispatch(method, url.path, params, key, fault)
            if self.after_commit is not None and not replayed:
                await self.after_commit(method, url.path)
            if fault is not None and fault.kind == "timeout_after_commit":
                await asyncio.sleep(self.hang_seconds)
                return
            if fault is not None and fault.kind == "drop_after_commit":
                writer.transport.abort()
                return
            await self._respond(writer, status, payload, replayed=replayed)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        *,
        replayed: bool = False,
    ) -> None:
        data = json.dumps(payload).encode()
        extra = "Idempotent-Replayed: true\r\n" if replayed else ""
        writer.write(
            (
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nRequest-Id: req_{next(self._ids)}\r\n"
                f"{extra}Connection: close\r\n\r\n"
            ).encode()
            + data
        )
        await writer.drain()

    def _dispatch(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        key: str | None,
        fault: Fault | None,
    ) -> tuple[int, dict[str, Any], bool]:
        if key is not None and key in self._idempotency:
            stored_path, status, payload = self._idempotency[key]
            if stored_path != path:
                return 400, _error("idempotency_error", "Keys are for one request only"), False
            return status, payload, True
        status, payload = self._route(method, path, params, fault)
        # Like Stripe: results are stored once the endpoint ran (validation 400s included).
        if key is not None and method == "POST":
            self._idempotency[key] = (path, status, payload)
        return status, payload, False

    # ------------------------------------------------------------------ Stripe endpoints

    def _new_id(self, prefix: str) -> str:
        # Unique across fake instances: tests share one database with unique Stripe IDs.
        return f"{prefix}_{self._tag}{next(self._ids):06d}"

    def _route(
        self, method: str, path: str, params: dict[str, str], fault: Fault | None
    ) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        if method == "POST" and parts == ["customers"]:
            new_customer: dict[str, Any] = {
                "id": self._new_id("cus"),
                "object": "customer",
                "name": params.get("name"),
                "email": params.get("email"),
                "metadata": _nested(params, "metadata"),
                "invoice_settings": {"default_payment_method": None},
            }
            self.customers[new_customer["id"]] = new_customer
            return 200, new_customer
        if method == "POST" and len(parts) == 2 and parts[0] == "customers":
            customer = self.customers.get(parts[1])
            if customer is None:
                return 404, _error("invalid_request_error", "No such customer", "resource_missing")
            default = params.get("invoice_settings[default_payment_method]")
            if default is not None:
                customer["invoice_settings"]["default_payment_method"] = default
            return 200, customer
        if method == "POST" and len(parts) == 3 and parts[0] == "payment_methods":
            pm_id, action = parts[1], parts[2]
            if action == "attach":
                # Like Stripe's test tokens: attaching `pm_card_visa` mints a new PaymentMethod.
                card = TEST_CARDS.get(pm_id)
                if card is None:
                    return 404, _error(
                        "invalid_request_error", "No such PaymentMethod", "resource_missing"
                    )
                if params.get("customer") not in self.customers:
                    return 404, _error(
                        "invalid_request_error", "No such customer", "resource_missing"
                    )
                pm: dict[str, Any] = {
                    "id": self._new_id("pm"),
                    "object": "payment_method",
                    "type": "card",
                    "card": dict(card),
                    "customer": params["customer"],
                    "metadata": {"token": pm_id},
                }
                self.payment_methods[pm["id"]] = pm
                return 200, pm
            if action == "detach":
                detached = self.payment_methods.get(pm_id)
                if detached is None:
                    return 404, _error(
                        "invalid_request_error", "No such PaymentMethod", "resource_missing"
                    )
                detached["customer"] = None
                return 200, detached
        if method == "POST" and parts == ["invoices"]:
            if params.get("customer") not in self.customers:
                return 404, _error("invalid_request_error", "No such customer", "resource_missing")
            new_invoice: dict[str, Any] = {
                "id": self._new_id("in"),
                "object": "invoice",
                "customer": params["customer"],
                "status": "draft",
                "currency": params.get("currency", "usd"),
                "metadata": _nested(params, "metadata"),
                "amount_due": 0,
                "amount_paid": 0,
                "lines": [],
                "charge": None,
            }
            self.invoices[new_invoice["id"]] = new_invoice
            return 200, new_invoice
        if method == "POST" and parts == ["invoiceitems"]:
            invoice = self.invoices.get(params.get("invoice", ""))
            if invoice is None or invoice["status"] != "draft":
                return 400, _error("invalid_request_error", "Invoice is not a draft")
            item: dict[str, Any] = {
                "id": self._new_id("ii"),
                "object": "invoiceitem",
                "amount": int(params["amount"]),
                "currency": params.get("currency", "usd"),
                "description": params.get("description"),
                "invoice": invoice["id"],
            }
            self.invoice_items[item["id"]] = item
            invoice["lines"].append(item["id"])
            invoice["amount_due"] += item["amount"]
            return 200, item
        if len(parts) >= 2 and parts[0] == "invoices":
            invoice = self.invoices.get(parts[1])
            if invoice is None:
                return 404, _error("invalid_request_error", "No such invoice", "resource_missing")
            if method == "GET" and len(parts) == 2:
                return 200, invoice
            action = parts[2] if len(parts) == 3 else ""
            if action == "finalize":
                if invoice["status"] == "draft":
                    invoice["status"] = "open"
                return 200, invoice
            if action == "pay":
                return self._pay(invoice, params, fault)
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method} {path})")

    def _pay(
        self, invoice: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> tuple[int, dict[str, Any]]:
        if invoice["status"] == "paid":
            return 400, _error(
                "invalid_request_error", "Invoice is already paid", "invoice_already_paid"
            )
        if invoice["status"] != "open":
            return 400, _error("invalid_request_error", "Invoice must be finalized first")
        customer = self.customers[invoice["customer"]]
        pm = params.get("payment_method") or customer["invoice_settings"]["default_payment_method"]
        token = self.payment_methods.get(pm or "", {}).get("metadata", {}).get("token")
        declined = (fault is not None and fault.kind == "decline") or token in (
            None,
            "pm_card_chargeDeclined",
        )
        charge = {
            "id": self._new_id("ch"),
            "invoice": invoice["id"],
            "amount": invoice["amount_due"],
            "status": "failed" if declined else "succeeded",
        }
        self.charges.append(charge)
        if declined:
            return 402, {
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "generic_decline",
                    "message": "Your card was declined.",
                    "charge": charge["id"],
                }
            }
        invoice["status"] = "paid"
        invoice["amount_paid"] = invoice["amount_due"]
        invoice["charge"] = charge["id"]
        return 200, invoice


def _error(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return {"error": error}


def _nested(params: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in params.items() if k.startswith(prefix)}
