"""MetricsSource over the Prometheus HTTP API (requests).

Every answer is validated (HTTP status, JSON, `"status": "success"`, result type, label and
value types) and every failure becomes `SourceError("prometheus", ...)` naming the server and
the cause; a rejected query also names Prometheus's own error text and the query. The bearer
token is sent in a header and never appears in a message, a log line or `repr()`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import numpy as np
import requests

from ..errors import SourceError
from ._describe import describe
from .ports import RangeSeries, Sample

#: Prometheus refuses a range query with more than 11,000 points per series.
MAX_POINTS = 11_000
#: Above this many bytes of query string, send a POST form (proxies cap URL length).
_MAX_GET = 4000
_NOT_RETRIABLE = frozenset({"bad_data", "execution"})  # the query itself is wrong


class PrometheusClient:
    """Read Prometheus at `url` (e.g. http://127.0.0.1:9090); `timeout` bounds each request."""

    def __init__(
        self,
        url: str,
        timeout: float,
        bearer_token: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._token = bearer_token
        self._session = session if session is not None else requests.Session()
        self._own_session = session is None

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"PrometheusClient(url={self.url!r}, timeout={self.timeout:g})"

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    # -- MetricsSource --------------------------------------------------------------------

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Instant query; a scalar result comes back as one sample without labels."""
        params = {"query": promql, "timeout": f"{self.timeout:g}"}
        if at is not None:
            params["time"] = _fmt_time(at)
        data = self._call("/api/v1/query", params, promql)
        kind = data["resultType"]
        if kind not in ("vector", "scalar"):
            raise self._error(
                f"instant query returned a {kind!r} result, expected 'vector' or 'scalar' "
                f"(use query_range for ranges); query: {promql}",
                retriable=False,
            )
        try:
            return _vector(data["result"]) if kind == "vector" else _scalar(data["result"])
        except _Malformed as exc:
            raise self._bad(promql, str(exc)) from None

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[RangeSeries]:
        """Range query over [start, end] every `step` seconds, in chunks of at most
        MAX_POINTS points so that Prometheus never refuses a long history."""
        if not step > 0:
            raise ValueError("step must be greater than 0")
        if end < start:
            return []
        last = math.floor((end - start) / step + 1e-9)  # index of the last evaluation point
        merged: dict[tuple[tuple[str, str], ...], tuple[Mapping[str, str], list, list]] = {}
        for first in range(0, last + 1, MAX_POINTS):
            chunk_start = start + first * step
            chunk_end = start + min(first + MAX_POINTS - 1, last) * step
            params = {
                "query": promql,
                "start": _fmt_time(chunk_start),
                "end": _fmt_time(chunk_end),
                "step": repr(float(step)),
                "timeout": f"{self.timeout:g}",
            }
            data = self._call("/api/v1/query_range", params, promql)
            if data["resultType"] != "matrix":
                raise self._error(
                    f"range query returned a {data['resultType']!r} result, expected 'matrix'; "
                    f"query: {promql}",
                    retriable=False,
                )
            try:
                series = _matrix(data["result"])
            except _Malformed as exc:
                raise self._bad(promql, str(exc)) from None
            for labels, ts, vals in series:
                key = tuple(sorted(labels.items()))
                entry = merged.setdefault(key, (labels, [], []))
                entry[1].append(ts)
                entry[2].append(vals)
        out = []
        for labels, ts_parts, val_parts in merged.values():
            ts = np.concatenate(ts_parts) if len(ts_parts) > 1 else ts_parts[0]
            vals = np.concatenate(val_parts) if len(val_parts) > 1 else val_parts[0]
            out.append(RangeSeries(labels=labels, timestamps=ts, values=vals))
        return out

    def is_online(self) -> bool:
        """True when Prometheus answers /-/ready with 200; never raises."""
        try:
            resp = self._session.get(
                f"{self.url}/-/ready", headers=self._headers(), timeout=self.timeout
            )
        except requests.RequestException:
            return False
        return resp.status_code == 200

    # -- internals ------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _error(self, message: str, *, retriable: bool = True,
               unreachable: bool = False) -> SourceError:
        return SourceError("prometheus", f"{self.url}: {message}", retriable=retriable,
                           unreachable=unreachable)

    def _bad(self, promql: str, what: str) -> SourceError:
        return self._error(f"malformed answer ({what}); query: {promql}")

    def _call(self, path: str, params: dict[str, str], promql: str) -> dict[str, Any]:
        """One API call; returns the validated `data` object."""
        url = f"{self.url}{path}"
        try:
            if len(urlencode(params)) > _MAX_GET:
                resp = self._session.post(
                    url, data=params, headers=self._headers(), timeout=self.timeout
                )
            else:
                resp = self._session.get(
                    url, params=params, headers=self._headers(), timeout=self.timeout
                )
            body = resp.json() if resp.content else None
        except requests.exceptions.JSONDecodeError:
            raise self._error(_not_json(resp), retriable=_retriable(resp.status_code)) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._error(describe(exc, self.timeout), unreachable=True) from exc
        except requests.RequestException as exc:
            raise self._error(describe(exc, self.timeout)) from exc
        if isinstance(body, dict) and body.get("status") == "error":
            kind = body.get("errorType") or "error"
            text = body.get("error") or "(no error text)"
            raise self._error(
                f"query rejected (HTTP {resp.status_code}, {kind}): {text}; query: {promql}",
                retriable=kind not in _NOT_RETRIABLE,
            )
        if resp.status_code != 200:
            raise self._error(f"HTTP {resp.status_code} {resp.reason}: {_snippet(resp.text)}",
                              retriable=_retriable(resp.status_code))
        if not isinstance(body, dict) or body.get("status") != "success":
            raise self._bad(promql, "no \"status\": \"success\"")
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("resultType"), str):
            raise self._bad(promql, "no data.resultType")
        if "result" not in data:
            raise self._bad(promql, "no data.result")
        return data


def _retriable(status: int) -> bool:
    """5xx and 429 may pass; another 4xx (401 bad token, 404 wrong URL) needs a fix."""
    return status >= 500 or status == 429 or status == 200


def _fmt_time(t: float) -> str:
    return f"{t:.3f}"  # Prometheus works in milliseconds


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return (text[:200] + "...") if len(text) > 200 else (text or "(empty body)")


def _not_json(resp: requests.Response) -> str:
    if resp.status_code != 200:
        return f"HTTP {resp.status_code} {resp.reason}: {_snippet(resp.text)}"
    return f"the answer is not JSON (is this Prometheus?): {_snippet(resp.text)}"


class _Malformed(Exception):
    """A structural problem in an answer; the caller adds the server and the query."""


def _labels(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise _Malformed("'metric' is not a map of strings")
    return raw


def _pair(raw: Any) -> tuple[float, Any]:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or isinstance(raw[0], bool)
        or not isinstance(raw[0], int | float)
    ):
        raise _Malformed(f"a sample is not [timestamp, \"value\"]: {raw!r:.80}")
    return float(raw[0]), raw[1]


def _value(raw: Any) -> float:
    """Prometheus sends values as strings, including "NaN", "+Inf" and "-Inf"."""
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    raise _Malformed(f"a value is not a number in a string: {raw!r:.80}")


def _scalar(result: Any) -> list[Sample]:
    return [Sample(labels={}, value=_value(_pair(result)[1]))]


def _vector(result: Any) -> list[Sample]:
    if not isinstance(result, list):
        raise _Malformed("'result' is not a list")
    samples = []
    for item in result:
        if not isinstance(item, dict):
            raise _Malformed("a vector element is not an object")
        if "value" not in item and "histogram" in item:
            continue  # native histograms have no single float value: nothing to forecast
        samples.append(Sample(labels=_labels(item.get("metric")),
                              value=_value(_pair(item.get("value"))[1])))
    return samples


def _matrix(result: Any) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    if not isinstance(result, list):
        raise _Malformed("'result' is not a list")
    out = []
    for item in result:
        if not isinstance(item, dict):
            raise _Malformed("a matrix element is not an object")
        labels = _labels(item.get("metric"))
        values = item.get("values")
        if values is None and "histograms" in item:
            continue  # native histograms only: nothing to forecast
        if not isinstance(values, list):
            raise _Malformed("a series has no 'values' list")
        ts = np.empty(len(values), dtype=np.float64)
        vals = np.empty(len(values), dtype=np.float64)
        for i, pair in enumerate(values):
            ts[i], raw = _pair(pair)
            vals[i] = _value(raw)
        if len(ts) > 1 and not np.all(np.diff(ts) > 0):
            raise _Malformed("timestamps are not increasing")
        out.append((labels, ts, vals))
    return out
