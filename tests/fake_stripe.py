"""A small local fake of the Stripe API (v1) for tests, speaking Stripe's documented wire format.

Requests arrive as the official SDK sends them (form-encoded bracket notation, Bearer auth,
``Idempotency-Key``); responses are JSON objects carrying ``object`` and Stripe-style ids, errors
use Stripe's ``{"error": {...}}`` shape. It covers what billing uses: customers, Checkout Sessions,
billing-portal sessions, subscriptions and prices, plus drivers for what happens on Stripe's side
(a customer completing checkout, subscription changes, signed webhook events).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = dict[str, Any]
Handler = Callable[[Request, JSON], JSON]

# From this API version on, a subscription's billing period lives only on its items.
PERIOD_ON_ITEMS_SINCE = "2025-03-31"
DEFAULT_PERIOD = 30 * 86_400
TEST_API_KEY = "sk_test_fake"
TEST_WEBHOOK_SECRET = "whsec_test_fake"
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def parse_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Stripe's bracket notation (``a[b][0][c]=v``) as nested dicts, with index-keyed levels as lists."""
    root: JSON = {}
    for key, value in pairs:
        name, _, rest = key.partition("[")
        path = [name, *rest.removesuffix("]").split("][")] if rest else [name]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    result: JSON = _listify(root)
    return result


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _listify(item) for key, item in value.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


class ApiError(Exception):
    """An error response in Stripe's shape."""

    def __init__(self, status: int, message: str, **fields: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": "invalid_request_error", "message": message, **fields}}


def missing_param(param: str) -> ApiError:
    return ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def no_such(kind: str, ident: str, param: str = "id") -> ApiError:
    # An unknown id in the URL is a 404; an unknown id passed as a parameter is a 400.
    status = 404 if param == "id" else 400
    return ApiError(status, f"No such {kind}: '{ident}'", code="resource_missing", param=param)


def price_object(
    price_id: str,
    unit_amount: int | None = None,
    *,
    currency: str = "usd",
    interval: str = "month",
    interval_count: int = 1,
) -> JSON:
    """A recurring Price as ``GET /v1/prices/{id}`` returns it."""
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": int(time.time()),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": "prod_" + price_id.removeprefix("price_"),
        "recurring": {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
    }


def _metadata(params: JSON) -> dict[str, str]:
    # An empty value means "unset" to Stripe.
    return {key: value for key, value in params.get("metadata", {}).items() if value != ""}


def _json_response(status: int, body: JSON) -> Response:
    headers = {"Request-Id": new_id("req_", 14)}
    return Response(json.dumps(body), status, headers, media_type="application/json")


class _InLoopServer(uvicorn.Server):
    """uvicorn sharing the test's event loop; signals stay with pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FakeStripe:
    """Stripe's API on a local port, with its state in plain dicts that tests may read and change."""

    def __init__(self, api_key: str = TEST_API_KEY, webhook_secret: str = TEST_WEBHOOK_SECRET) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.customers: dict[str, JSON] = {}
        self.checkout_sessions: dict[str, JSON] = {}
        self.portal_sessions: dict[str, JSON] = {}
        self.subscriptions: dict[str, JSON] = {}
        self.prices: dict[str, JSON] = {}  # add_price() puts them here
        self.requests: list[tuple[str, str, JSON]] = []
        self._checkout_params: dict[str, JSON] = {}  # what each session was created with
        self._idempotent: dict[str, tuple[str, JSON, JSON]] = {}  # key -> (path, params, response)
        self._portal_configuration = new_id("bpc_")
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        routes = [
            ("POST", "/v1/customers", self._create_customer),
            ("GET", "/v1/customers/{id}", self._retrieve(self.customers, "customer")),
            ("POST", "/v1/checkout/sessions", self._create_checkout_session),
            ("GET", "/v1/checkout/sessions/{id}", self._retrieve(self.checkout_sessions, "checkout.session")),
            ("POST", "/v1/billing_portal/sessions", self._create_portal_session),
            ("GET", "/v1/subscriptions/{id}", self._retrieve(self.subscriptions, "subscription")),
            ("GET", "/v1/prices/{id}", self._retrieve(self.prices, "price")),
        ]
        any_method = ["GET", "POST", "DELETE", "PUT", "PATCH"]
        known = [Route(path, self._endpoint(handler), methods=[method]) for method, path, handler in routes]
        fallback = Route("/{path:path}", self._endpoint(self._unrecognized), methods=any_method)
        self.app = Starlette(routes=[*known, fallback])

    # -- serving ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in the running event loop; return the base URL (the SDK appends ``/v1/...``)."""
        if self._server is not None:
            raise RuntimeError("FakeStripe is already running")
        config = uvicorn.Config(
            self.app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        server = _InLoopServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("FakeStripe stopped during start-up")
            await asyncio.sleep(0.01)
        self._server, self._task = server, task
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    # -- HTTP plumbing ---------------------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = (await request.body()).decode()
            pairs = [
                *parse_qsl(request.url.query, keep_blank_values=True),
                *parse_qsl(body, keep_blank_values=True),
            ]
            params = parse_form(pairs)
            path = request.url.path
            self.requests.append((request.method, path, params))
            key = request.headers.get("idempotency-key") if request.method == "POST" else None
            try:
                self._authenticate(request.headers.get("authorization", ""))
                if key is not None and key in self._idempotent:
                    return self._replay(key, path, params)
                response = self._wire(handler(request, params), request.headers.get("stripe-version", ""))
            except ApiError as exc:
                return _json_response(exc.status, exc.body)
            if key is not None:  # replays repeat this response as it was, not the object as it is now
                self._idempotent[key] = (path, params, copy.deepcopy(response))
            return _json_response(200, response)

        return endpoint

    def _authenticate(self, authorization: str) -> None:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            masked = key[:8] + "*" * max(len(key) - 12, 0) + key[-4:]
            raise ApiError(401, f"Invalid API Key provided: {masked}")

    def _replay(self, key: str, path: str, params: JSON) -> Response:
        first_path, first_params, response = self._idempotent[key]
        if (first_path, first_params) != (path, params):
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first "
                f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                type="idempotency_error",
            )
        replayed = _json_response(200, response)
        replayed.headers["Idempotent-Replayed"] = "true"
        return replayed

    @staticmethod
    def _wire(obj: JSON, stripe_version: str) -> JSON:
        """The object as the requested API version shows it."""
        if obj.get("object") != "subscription" or not stripe_version:
            return obj
        items = obj["items"]["data"]
        if stripe_version[:10] >= PERIOD_ON_ITEMS_SINCE or not items:
            return obj
        # Older versions also had the period on the subscription itself.
        period = {key: items[0][key] for key in ("current_period_start", "current_period_end")}
        return {**obj, **period}

    # -- API handlers ----------------------------------------------------------------------------

    @staticmethod
    def _unrecognized(request: Request, params: JSON) -> JSON:
        raise ApiError(404, f"Unrecognized request URL ({request.method}: {request.url.path}).")

    @staticmethod
    def _retrieve(store: dict[str, JSON], kind: str) -> Handler:
        def retrieve(request: Request, params: JSON) -> JSON:
            ident = request.path_params["id"]
            if ident not in store:
                raise no_such(kind, ident)
            return store[ident]

        return retrieve

    def _create_customer(self, request: Request, params: JSON) -> JSON:
        return self._add_customer(params)

    def _add_customer(self, params: JSON) -> JSON:
        customer: JSON = {
            "id": new_id("cus_", 14),
            "object": "customer",
            "created": int(time.time()),
            "description": params.get("description"),
            "email": params.get("email"),
            "livemode": False,
            "metadata": _metadata(params),
            "name": params.get("name"),
        }
        self.customers[customer["id"]] = customer
        return customer

    def _create_checkout_session(self, request: Request, params: JSON) -> JSON:
        mode = params.get("mode")
        if not mode:
            raise missing_param("mode")
        if mode not in ("payment", "setup", "subscription"):
            raise ApiError(400, f"Invalid mode: {mode}", code="parameter_invalid_string", param="mode")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            raise no_such("customer", customer, param="customer")
        line_items = params.get("line_items")
        if mode != "setup" and not line_items:
            raise missing_param("line_items")
        for index, item in enumerate(line_items or []):
            if not item.get("price"):
                raise missing_param(f"line_items[{index}][price]")
        now = int(time.time())
        session_id = new_id("cs_test_", 58)
        session: JSON = {
            "id": session_id,
            "object": "checkout.session",
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "customer": customer,
            "customer_email": params.get("customer_email"),
            "expires_at": now + 86_400,
            "livemode": False,
            "metadata": _metadata(params),
            "mode": mode,
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": params.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.checkout_sessions[session_id] = session
        self._checkout_params[session_id] = params
        return session

    def _create_portal_session(self, request: Request, params: JSON) -> JSON:
        customer = params.get("customer")
        if not customer:
            raise missing_param("customer")
        if customer not in self.customers:
            raise no_such("customer", customer, param="customer")
        session: JSON = {
            "id": new_id("bps_"),
            "object": "billing_portal.session",
            "configuration": self._portal_configuration,
            "created": int(time.time()),
            "customer": customer,
            "flow": None,
            "livemode": False,
            "locale": None,
            "on_behalf_of": None,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/test_{new_id('', 32)}",
        }
        self.portal_sessions[session["id"]] = session
        return session

    # -- test drivers: what happens on Stripe's side ---------------------------------------------

    def add_price(self, price_id: str, unit_amount: int, **fields: Any) -> JSON:
        """A price in the account (``currency``, ``interval``, ``interval_count`` as keywords)."""
        price = price_object(price_id, unit_amount, **fields)
        self.prices[price_id] = price
        return price

    def price_reads(self) -> int:
        """How many ``GET /v1/prices/{id}`` requests arrived."""
        return sum(
            1 for method, path, _ in self.requests if method == "GET" and path.startswith("/v1/prices/")
        )

    def complete_checkout(
        self, session_id: str, *, status: str = "active", period_end: int | None = None
    ) -> JSON:
        """The customer pays: subscribe them to the session's prices and complete the session."""
        session = self.checkout_sessions[session_id]
        if session["mode"] != "subscription" or session["status"] != "open":
            raise ValueError(f"{session_id} is not an open subscription-mode session")
        params = self._checkout_params[session_id]
        if session["customer"] is None:  # Checkout creates the customer when none was given
            session["customer"] = self._add_customer({"email": session["customer_email"]})["id"]
        now = int(time.time())
        end = now + DEFAULT_PERIOD if period_end is None else period_end
        sub_id = new_id("sub_")
        items = [
            {
                "id": new_id("si_", 14),
                "object": "subscription_item",
                "created": now,
                "current_period_end": end,
                "current_period_start": now,
                "metadata": {},
                "price": self.prices.get(line["price"]) or price_object(line["price"]),
                "quantity": int(line.get("quantity", 1)),
                "subscription": sub_id,
            }
            for line in params["line_items"]
        ]
        subscription: JSON = {
            "id": sub_id,
            "object": "subscription",
            "billing_cycle_anchor": now,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "created": now,
            "currency": "usd",
            "customer": session["customer"],
            "ended_at": None,
            "items": {
                "object": "list",
                "data": items,
                "has_more": False,
                "total_count": len(items),
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            "latest_invoice": None,
            "livemode": False,
            "metadata": _metadata(params.get("subscription_data", {})),
            "start_date": now,
            "status": status,
        }
        self.subscriptions[sub_id] = subscription
        session.update(status="complete", payment_status="paid", subscription=sub_id)
        return subscription

    def set_subscription(self, sub_id: str, **changes: Any) -> JSON:
        """Change a subscription as Stripe would.

        ``price``/``quantity`` change the first item, ``period_start``/``period_end`` every item's
        ``current_period_*``; any other key must be a field of the subscription (``status``,
        ``cancel_at_period_end``, ``metadata``...).
        """
        sub = self.subscriptions[sub_id]
        items = sub["items"]["data"]
        now = int(time.time())
        for key, value in changes.items():
            if key == "price":
                items[0]["price"] = self.prices.get(value) or price_object(value)
            elif key == "quantity":
                items[0]["quantity"] = value
            elif key in ("period_start", "period_end"):
                for item in items:
                    item[f"current_{key}"] = value
            elif key in sub:
                sub[key] = value
            else:
                raise TypeError(f"not a subscription field: {key}")
        if "cancel_at_period_end" in changes:
            scheduled = bool(changes["cancel_at_period_end"])
            sub["cancel_at"] = items[0]["current_period_end"] if scheduled else None
            sub["canceled_at"] = now if scheduled else None
        if changes.get("status") == "canceled":
            sub["canceled_at"] = sub["canceled_at"] or now
            sub["ended_at"] = sub["ended_at"] or now
        return sub

    def event(
        self,
        type: str,
        data_object: JSON,
        *,
        created: int | None = None,
        previous_attributes: JSON | None = None,
    ) -> JSON:
        """A Stripe Event envelope around a snapshot of ``data_object``."""
        data: JSON = {"object": copy.deepcopy(data_object)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        return {
            "id": new_id("evt_"),
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(time.time()) if created is None else created,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }

    def sign(self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None) -> str:
        """The ``Stripe-Signature`` header for ``payload``: HMAC-SHA256 of ``"{t}.{payload}"``."""
        ts = int(time.time()) if timestamp is None else timestamp
        key = (self.webhook_secret if secret is None else secret).encode()
        signature = hmac.new(key, f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={ts},v1={signature}"
