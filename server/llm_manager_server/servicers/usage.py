"""``llm_manager.v1.UsageService``: the calling caller's own rows of the usage ledger.

Proto <-> domain only. The caller is the one the call gate authenticated (``caller_var``;
``""`` with authentication off): a request names no caller, so none can read another's."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from grpc import aio

from llm_manager.v1 import usage_service_pb2, usage_service_pb2_grpc

from ..domain.caller import current_caller_name
from ..domain.errors import FieldViolation, invalid_request
from ..domain.types import MODEL_NAME_RULE, is_valid_model_name
from ..usage import UsageLedger, UsageRow

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(field: str, text: str, violations: list[FieldViolation]) -> str | None:
    if not text:
        return None
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        date.fromisoformat(text)
    except ValueError:
        violations.append(FieldViolation(field, f"must be a UTC day as YYYY-MM-DD, got {text[:40]!r}"))
        return None
    return text


def _row(row: UsageRow) -> usage_service_pb2.UsageRow:
    return usage_service_pb2.UsageRow(
        date=row.day,
        model=row.model,
        requests=row.requests,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_usd=row.cost_usd,
        cache_hits=row.cache_hits,
    )


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, ledger: UsageLedger) -> None:
        self._ledger = ledger

    async def GetUsage(
        self, request: usage_service_pb2.GetUsageRequest, context: aio.ServicerContext[Any, Any]
    ) -> usage_service_pb2.GetUsageResponse:
        violations: list[FieldViolation] = []
        first = _day("start_date", request.start_date, violations)
        last = _day("end_date", request.end_date, violations)
        if first is not None and last is not None and last < first:
            violations.append(FieldViolation("end_date", f"must not be before start_date ({first}), got {last}"))
        if request.model and not is_valid_model_name(request.model):
            violations.append(FieldViolation("model", MODEL_NAME_RULE))
        if violations:
            raise invalid_request(*violations)
        caller = current_caller_name()
        rows = await self._ledger.read(caller, first_day=first, last_day=last, model=request.model or None)
        total = UsageRow(caller, "", "")
        for row in rows:
            total = total.plus(row)
        return usage_service_pb2.GetUsageResponse(caller=caller, rows=[_row(r) for r in rows], total=_row(total))
